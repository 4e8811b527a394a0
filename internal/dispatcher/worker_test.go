package dispatcher

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/unread"
)

type tokens struct{}

func (tokens) Token(context.Context) (string, error) { return "t", nil }

// TestWriteStateMergesAConflict has another writer change a user's state
// behind the worker's back: the worker's write merges the stored state with
// the events it holds instead of overwriting it.
func TestWriteStateMergesAConflict(t *testing.T) {
	conn := brokertest.Start(t, brokertest.WithPartitions(1))
	ctx := context.Background()
	d, err := New(ctx, Config{Tokens: tokens{}}, conn, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	keyer := d.keyer
	const user = "alice@fabrikam.com"
	key := keyer.UserKey("fabrikam.com", user)

	// One held event: new mail, no authoritative count, stored at some seq.
	ev := events.Event{Tenant: "fabrikam.com", User: user, Kind: events.KindNew, ChangeID: "c1", OccurredAt: time.Now()}
	ev.Normalize()
	data, _ := ev.Encode()
	if _, err := conn.JS.PublishMsg(ctx, &nats.Msg{Subject: keyer.Subject("fabrikam.com", user), Data: data}); err != nil {
		t.Fatal(err)
	}
	cons, err := conn.JS.OrderedConsumer(ctx, broker.StreamMail, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := msg.Metadata()
	seq := meta.Sequence.Stream

	// Another writer stored an exact count of 10 up to the previous event,
	// and a push of 9.
	nine := 9
	if _, err := d.unread.Put(ctx, key, unread.State{Count: 10, Exact: true, LastSeq: seq - 1, LastPushedCount: &nine, LastPushedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}

	// This worker believed the user new (revision 0) and applied the event.
	w := d.newWorker(0)
	u := w.ledger.Add(key, "fabrikam.com", user)
	w.ledger.Load(u, unread.State{}, 0)
	h := &held{msg: msg, seq: seq, user: u}
	w.ledger.Apply(time.Now(), u, &ev, h)
	due := w.ledger.Flush(time.Now().Add(time.Hour))
	if len(due) != 1 || len(due[0].Events) != 1 {
		t.Fatalf("due %+v, want the user's one event", due)
	}
	settle := w.ledger.Unchanged(due[0])
	if err := w.writeState(ctx, settle); err != nil {
		t.Fatalf("writeState: %v", err)
	}
	if !settle.Merged {
		t.Fatal("the conflict was not noticed")
	}
	got, _, err := d.unread.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Count != 11 || got.Exact || got.LastSeq != seq || got.LastPushedCount == nil || *got.LastPushedCount != 9 {
		t.Fatalf("merged state %+v, want count 11 (10 + the held new mail), estimated, last seq %d, pushed 9", got, seq)
	}
	if u.State().Count != 11 || u.Dirty() {
		t.Fatalf("worker's state %+v dirty=%v, want the merged one, written", u.State(), u.Dirty())
	}
}
