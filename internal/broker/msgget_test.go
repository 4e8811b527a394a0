package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

// TestLeaderGetMsgIsBoundedWithoutADeadline: a leader read with a context
// without deadline waits at most the JetStream context's default timeout,
// as the library's own calls do; a stream whose servers are cut off from
// each other may answer nothing, and the partition's loop that asked must
// not wait for ever. With the library's default it reads as usual.
func TestLeaderGetMsgIsBoundedWithoutADeadline(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	if _, err := conn.JS.Publish(ctx, "mail.fabrikam_com.x", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	m, err := broker.LeaderGetMsg(ctx, conn.JS, broker.StreamMail, broker.MsgQuery{Seq: 1})
	if err != nil || m.Sequence != 1 {
		t.Fatalf("reading the first event: %v, %v", m, err)
	}

	// An API nobody answers (a subscriber that keeps silent, so that the
	// request does not fail at once for want of responders).
	sub, err := conn.NC.Subscribe("SILENT.API.STREAM.MSG.GET.MAIL", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	js, err := jetstream.NewWithAPIPrefix(conn.NC, "SILENT.API", jetstream.WithDefaultTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := broker.LeaderGetMsg(ctx, js, broker.StreamMail, broker.MsgQuery{Seq: 1})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a read nobody answers: %v, want the deadline", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a read nobody answers still waits after 30 s")
	}
}
