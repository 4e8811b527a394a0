package dispatcher

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// deliveredTwice stores two events of alice and returns a worker, a
// consumer with explicit acks and ackWait, and the two events as it
// delivered them.
func deliveredTwice(t *testing.T, ackWait time.Duration) (*worker, jetstream.Consumer, []jetstream.Msg) {
	t.Helper()
	d := onePartition(t)
	storeMail(t, d, 2)
	cons, err := d.js.CreateOrUpdateConsumer(context.Background(), broker.StreamMail, jetstream.ConsumerConfig{
		Durable: "acks", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 2 {
		t.Fatalf("delivered %d events, want 2", len(msgs))
	}
	return d.newWorker(0, 0), cons, msgs
}

// ackPending is how many events the consumer waits to hear about.
func ackPending(t *testing.T, cons jetstream.Consumer) int {
	t.Helper()
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending
}

// TestAcknowledgements sends each answer a held event gets to a real
// consumer and checks what the server made of it. The second event is
// then acknowledged through the library, synchronously: the server takes
// a consumer's acknowledgements in order, so once it confirms that one,
// it has taken the first answer too.
func TestAcknowledgements(t *testing.T) {
	tests := []struct {
		name string
		// keep is what a held event keeps of its message.
		keep func(jetstream.Msg) received
		send func(*worker, received) error
		// released: the consumer no longer waits for the event.
		released bool
	}{
		{"ack", receivedOf, (*worker).ack, true},
		{"termination", receivedOf, func(w *worker, r received) error { return w.term(r, "not an event") }, true},
		{"in progress", receivedOf, (*worker).inProgress, false},
		{"ack of an event read by catch-up", replayed, (*worker).ack, false},
		{"termination of an event read by catch-up", replayed, func(w *worker, r received) error { return w.term(r, "not an event") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, cons, msgs := deliveredTwice(t, 30*time.Second)
			if err := tt.send(w, tt.keep(msgs[0])); err != nil {
				t.Fatal(err)
			}
			if err := msgs[1].DoubleAck(context.Background()); err != nil {
				t.Fatal(err)
			}
			want := 1
			if tt.released {
				want = 0
			}
			if got := ackPending(t, cons); got != want {
				t.Errorf("%d event(s) await acknowledgement, want %d", got, want)
			}
		})
	}
}

// TestInProgressHoldsRedelivery keeps one of two unacknowledged events
// alive with in-progress acks past the consumer's AckWait: only the other
// is delivered again.
func TestInProgressHoldsRedelivery(t *testing.T) {
	const ackWait = 2 * time.Second
	w, cons, msgs := deliveredTwice(t, ackWait)
	kept := receivedOf(msgs[0])
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(ackWait / 10)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := w.inProgress(kept); err != nil {
					t.Error(err)
				}
			}
		}
	}()
	defer func() { cancel(); <-done }()
	again, err := cons.Fetch(2, jetstream.FetchMaxWait(ackWait*3/2))
	if err != nil {
		t.Fatal(err)
	}
	var redelivered []uint64
	for m := range again.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		redelivered = append(redelivered, md.Sequence.Stream)
		_ = m.Ack()
	}
	other, _ := msgs[1].Metadata()
	if len(redelivered) != 1 || redelivered[0] != other.Sequence.Stream {
		t.Fatalf("redelivered events %v, want only %d, the one without in-progress acks", redelivered, other.Sequence.Stream)
	}
}
