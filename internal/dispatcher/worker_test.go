package dispatcher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/dispatcher/badges"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/unread"
)

type tokens struct{}

func (tokens) Token(context.Context) (string, error) { return "t", nil }

// newMailFor stores n new-mail events of alice in a one-partition MAIL
// stream and returns a dispatcher on it, alice's key and the events as
// delivered.
func newMailFor(t *testing.T, n int) (*Dispatcher, string, []jetstream.Msg) {
	t.Helper()
	d := onePartition(t)
	storeMail(t, d, n)
	cons, err := d.js.OrderedConsumer(context.Background(), broker.StreamMail, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for range n {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, msg)
	}
	return d, d.keyer.UserKey(aliceTenant, alice), msgs
}

// onePartition returns a dispatcher (not running) on a new server with a
// one-partition MAIL stream.
func onePartition(t *testing.T) *Dispatcher {
	t.Helper()
	conn := brokertest.Start(t, brokertest.WithPartitions(1))
	d, err := New(context.Background(), Config{Tokens: tokens{}}, conn, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// alice is the user of newMailFor and storeMail, at aliceTenant.
const aliceTenant, alice = "fabrikam.com", "alice@fabrikam.com"

// storeMail stores n new-mail events of alice in MAIL through d's keyer.
func storeMail(t *testing.T, d *Dispatcher, n int) {
	t.Helper()
	for i := range n {
		ev := events.Event{Tenant: aliceTenant, User: alice, Kind: events.KindNew, ChangeID: fmt.Sprintf("c%d", i), OccurredAt: time.Now()}
		ev.Normalize()
		data, _ := ev.Encode()
		if _, err := d.js.PublishMsg(context.Background(), &nats.Msg{Subject: d.keyer.Subject(aliceTenant, alice), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
}

// applyHeld applies a delivered event to the worker's ledger and returns
// it held.
func applyHeld(t *testing.T, w *worker, u *user, msg jetstream.Msg) *held {
	t.Helper()
	ev, err := decodeEvent(msg.Data())
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := msg.Metadata()
	h := &held{received: receivedOf(msg), seq: meta.Sequence.Stream, user: u}
	w.heldN.Add(1)
	w.ledger.Apply(time.Now(), u, &ev, h)
	return h
}

// TestWriteStateMergesAConflict has another writer change a user's state
// behind the worker's back: the worker's write merges the stored state with
// the events it holds instead of overwriting it.
func TestWriteStateMergesAConflict(t *testing.T) {
	ctx := context.Background()
	d, key, msgs := newMailFor(t, 1)
	msg := msgs[0]
	meta, _ := msg.Metadata()
	seq := meta.Sequence.Stream

	// Another writer stored an exact count of 10 up to the previous event,
	// and a push of 9.
	nine := 9
	if _, err := d.unread.Put(ctx, key, unread.State{Count: 10, Exact: true, LastSeq: seq - 1, LastPushedCount: &nine, LastPushedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}

	// This worker believed the user new (revision 0) and applied the event.
	w := d.newWorker(0, 0)
	u := w.ledger.Add(key, "fabrikam.com", "alice@fabrikam.com")
	w.ledger.Load(u, unread.State{}, 0)
	applyHeld(t, w, u, msg)
	due := w.ledger.Flush(time.Now().Add(time.Hour))
	if len(due) != 1 || len(due[0].Events) != 1 {
		t.Fatalf("due %+v, want the user's one event", due)
	}
	settle := w.ledger.Unchanged(due[0])
	task := &settleTask{Settle: settle}
	w.startWriters(ctx)
	defer close(w.quit)
	w.settle([]*settleTask{task})
	settleAll(ctx, t, w)
	if !task.ok {
		t.Fatal("the settle failed")
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

// TestWritesOfAUserFollowOneAnother settles a user's event while the
// loop goes on: the next event's settle waits for the first write, and
// then writes the state the first snapshot did not hold; both events are
// acknowledged only once written.
func TestWritesOfAUserFollowOneAnother(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, key, msgs := newMailFor(t, 2)
	w := d.newWorker(0, 0)
	w.startWriters(ctx)
	defer close(w.quit)
	u := w.ledger.Add(key, "fabrikam.com", "alice@fabrikam.com")
	w.ledger.Load(u, unread.State{}, 0)

	settleNext := func(msg jetstream.Msg) (*held, *settleTask) {
		h := applyHeld(t, w, u, msg)
		due := w.ledger.Flush(time.Now().Add(time.Hour))
		if len(due) != 1 {
			t.Fatalf("due %+v, want the user", due)
		}
		task := &settleTask{Settle: w.ledger.NotSent(time.Now(), due[0], "test")}
		w.settle([]*settleTask{task})
		return h, task
	}
	first, a := settleNext(msgs[0])
	second, b := settleNext(msgs[1])
	if w.writing[key] != a || len(w.waiting[key]) != 1 || w.waiting[key][0] != b {
		t.Fatalf("writing %v, waiting %v: want the second settle to wait for the first", w.writing[key], w.waiting[key])
	}
	if a.write == nil || a.write.State.Count != 1 {
		t.Fatalf("the first write %+v, want the count of the first event", a.write)
	}
	settleAll(ctx, t, w)
	if !a.ok || !b.ok || b.write == nil || b.write.State.Count != 2 {
		t.Fatalf("first ok %v, second ok %v writing %+v: want both written, the second with both events", a.ok, b.ok, b.write)
	}
	if !first.released || !second.released || w.heldN.Load() != 0 {
		t.Fatalf("released %v %v, %d held: want both events acknowledged", first.released, second.released, w.heldN.Load())
	}
	got, rev, err := d.unread.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Count != 2 || rev != b.rev || u.Rev() != rev || u.Dirty() || u.Settling() {
		t.Fatalf("stored %+v at %d (second write at %d), worker at %d dirty %v settling %v: want count 2, clean", got, rev, b.rev, u.Rev(), u.Dirty(), u.Settling())
	}
}

// settleAll finishes the worker's settle tasks as its loop would, until
// none is left.
func settleAll(ctx context.Context, t *testing.T, w *worker) {
	t.Helper()
	for len(w.writing) > 0 {
		select {
		case <-w.settled.C():
			w.finish(w.settled.Take(0))
		case <-ctx.Done():
			t.Fatalf("%d settle tasks did not finish: %v", len(w.writing), ctx.Err())
		}
	}
}

// TestConflictIsMergedWithTheLeadersState: a write that meets another
// writer's state merges with the state the bucket's leader holds, never
// with what a replica behind answers. A copy of the bucket that lacks the
// users' states (a mirror serving direct gets) answers some reads; a
// merge with its "no state" would write 1 instead of 11.
func TestConflictIsMergedWithTheLeadersState(t *testing.T) {
	ctx := context.Background()
	d, _, msgs := newMailFor(t, 1)
	meta, _ := msgs[0].Metadata()
	seq := meta.Sequence.Stream
	const users = 20
	keys := make([]string, users)
	var last uint64
	for i := range keys {
		keys[i] = d.keyer.UserKey(aliceTenant, fmt.Sprintf("user%02d@fabrikam.com", i))
		rev, err := d.unread.Put(ctx, keys[i], unread.State{Count: 10, Exact: true, LastSeq: seq - 1}, 0)
		if err != nil {
			t.Fatal(err)
		}
		last = rev
	}
	mirror, err := d.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "KV_unread_BEHIND", Mirror: &jetstream.StreamSource{Name: "KV_" + broker.BucketUnread, OptStartSeq: last + 1}, MirrorDirect: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The mirror serves direct gets once it has copied a message.
	if _, err := d.unread.Put(ctx, d.keyer.UserKey(aliceTenant, "bob@fabrikam.com"), unread.State{Count: 1}, 0); err != nil {
		t.Fatal(err)
	}
	waitMirrored(t, mirror, 1)
	behind := false
	for range 500 {
		if _, rev, err := d.unread.Get(ctx, keys[0]); err == nil && rev == 0 {
			behind = true
			break
		}
	}
	if !behind {
		t.Fatal("every read was answered by the bucket itself: the test shows nothing")
	}

	w := d.newWorker(0, 0)
	w.startWriters(ctx)
	defer close(w.quit)
	for _, key := range keys {
		// This worker believed the user new (revision 0).
		u := w.ledger.Add(key, aliceTenant, alice)
		w.ledger.Load(u, unread.State{}, 0)
		applyHeld(t, w, u, msgs[0])
		task := &settleTask{Settle: w.ledger.Unchanged(dueOne(t, w))}
		w.settle([]*settleTask{task})
		settleAll(ctx, t, w)
		got, _, err := d.unread.GetFromLeader(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !task.ok || got.Count != 11 {
			t.Fatalf("%s: written %v, stored count %d; want 11 (10 + the held new mail)", key, task.ok, got.Count)
		}
	}
}

// dueOne flushes the worker's ledger and returns its one user due.
func dueOne(t *testing.T, w *worker) badges.Due[*held] {
	t.Helper()
	due := w.ledger.Flush(time.Now().Add(time.Hour))
	if len(due) != 1 {
		t.Fatalf("due %+v, want one user", due)
	}
	return due[0]
}

// waitMirrored waits until mirror holds n messages: a mirror serves
// direct gets once it has copied one and is nearly caught up.
func waitMirrored(t *testing.T, mirror jetstream.Stream, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := mirror.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror holds %d messages, want %d", info.State.Msgs, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
