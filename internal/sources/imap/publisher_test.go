package imap

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/events"
)

func snap(user string, unread int) events.Event {
	return events.Event{User: user, Unread: &unread, ChangeID: fmt.Sprintf("%s/%d", user, unread)}
}

// ids lists the change ids of evs.
func ids(evs []events.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ChangeID
	}
	return out
}

func TestPublisherQueue(t *testing.T) {
	a, b, c := &watched{}, &watched{}, &watched{}
	cases := []struct {
		name string
		run  func(p *publisher) []string
		want []string
	}{
		{"oldest first, latest of each user", func(p *publisher) []string {
			p.put(a, snap("a", 1))
			p.put(b, snap("b", 1))
			p.put(a, snap("a", 2))
			_, evs := p.take(10)
			return ids(evs)
		}, []string{"a/2", "b/1"}},
		{"in batches", func(p *publisher) []string {
			p.put(a, snap("a", 1))
			p.put(b, snap("b", 1))
			p.put(c, snap("c", 1))
			_, first := p.take(2)
			_, second := p.take(2)
			return append(ids(first), ids(second)...)
		}, []string{"a/1", "b/1", "c/1"}},
		{"failed ones go back first", func(p *publisher) []string {
			p.put(a, snap("a", 1))
			p.put(b, snap("b", 1))
			users, evs := p.take(1)
			p.put(c, snap("c", 1))
			p.giveBack(users, evs)
			_, all := p.take(10)
			return ids(all)
		}, []string{"a/1", "b/1", "c/1"}},
		{"a newer snapshot replaces a failed one", func(p *publisher) []string {
			p.put(a, snap("a", 1))
			users, evs := p.take(1)
			p.put(a, snap("a", 2))
			p.giveBack(users, evs)
			_, all := p.take(10)
			return ids(all)
		}, []string{"a/2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := newWatchMetrics(nil)
			if err != nil {
				t.Fatal(err)
			}
			p := newPublisher(WatchConfig{Publish: func(context.Context, []events.Event) error { return nil }, RetryMin: 1, RetryMax: 1}, m)
			if got := tc.run(p); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("published %v, want %v", got, tc.want)
			}
			if p.size() != 0 {
				t.Errorf("%d left", p.size())
			}
		})
	}
}

func TestPublisherRetries(t *testing.T) {
	m, err := newWatchMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	calls := make(chan []events.Event, 10)
	failures := 2
	var waits []time.Duration
	p := newPublisher(WatchConfig{
		Publish: func(_ context.Context, evs []events.Event) error {
			calls <- evs
			if failures > 0 {
				failures--
				return errors.New("stream unavailable")
			}
			return nil
		},
		RetryMin: time.Second, RetryMax: time.Minute,
		Sleep: func(context.Context, time.Duration) error { return nil },
	}, m)
	p.sleep = func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		return nil
	}
	var users []*watched
	for i := range MaxPublishBatch + 1 {
		u := &watched{}
		users = append(users, u)
		p.put(u, snap(fmt.Sprint("u", i), i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx)
	}()
	// Two failed calls of the first batch, then both batches.
	var sizes []int
	for published := 0; published < MaxPublishBatch+1; {
		evs := <-calls
		sizes = append(sizes, len(evs))
		if len(sizes) > 2 {
			published += len(evs)
		}
	}
	if fmt.Sprint(sizes) != fmt.Sprint([]int{MaxPublishBatch, MaxPublishBatch, MaxPublishBatch, 1}) {
		t.Errorf("batches of %v", sizes)
	}
	cancel()
	<-done
	if len(waits) != 2 || waits[0] < time.Second/2 || waits[1] > time.Minute {
		t.Errorf("waits %v", waits)
	}
	if failed, ok := testutil.ToFloat64(m.events.WithLabelValues(outcomeFailed)), testutil.ToFloat64(m.events.WithLabelValues(outcomePublished)); failed != 2*MaxPublishBatch || ok != MaxPublishBatch+1 {
		t.Errorf("%v failed and %v published", failed, ok)
	}
	// What is left at shutdown is published once more.
	p.put(users[0], snap("u0", 9))
	p.flush(context.Background())
	if evs := <-calls; len(evs) != 1 || *evs[0].Unread != 9 {
		t.Errorf("flushed %v", evs)
	}
}
