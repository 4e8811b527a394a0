package scan_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/broker/scan"
)

func TestStream(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	publish := func(subject string, n int) {
		for i := range n {
			if _, err := conn.JS.Publish(ctx, subject, []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(broker.SubjectDead+".a.x", 300)
	publish(broker.SubjectDead+".b.y", 5)
	mid := time.Now()
	time.Sleep(10 * time.Millisecond)
	publish(broker.SubjectDead+".a.x", 2)

	read := func(opts scan.Options) []scan.Message {
		t.Helper()
		var out []scan.Message
		if err := scan.Stream(ctx, conn.JS, broker.StreamDead, opts, func(m scan.Message) error {
			out = append(out, m)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name string
		opts scan.Options
		want int
	}{
		{"all", scan.Options{}, 307},
		{"filter", scan.Options{Filters: []string{broker.SubjectDead + ".a.*"}}, 302},
		{"since", scan.Options{Since: mid}, 2},
		{"until", scan.Options{Until: mid, Filters: []string{broker.SubjectDead + ".b.>"}}, 5},
		{"limit", scan.Options{Limit: 10}, 10},
		{"nothing", scan.Options{Filters: []string{broker.SubjectDead + ".c.>"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := read(tt.opts)
			if len(got) != tt.want {
				t.Fatalf("%d messages, want %d", len(got), tt.want)
			}
			for i := 1; i < len(got); i++ {
				if got[i].Seq <= got[i-1].Seq {
					t.Fatalf("out of order at %d", i)
				}
			}
		})
	}

	stop := errors.New("stop")
	n := 0
	err := scan.Stream(ctx, conn.JS, broker.StreamDead, scan.Options{}, func(scan.Message) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("visit error: %v after %d", err, n)
	}
}
