package reconcile

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/unread"
)

const tenant = "fabrikam.com"

// mailSystem plays the mail system behind a counter: the true counts of
// the users it serves.
type mailSystem struct {
	name string
	mu   sync.Mutex
	box  map[string]int
	// during runs while the truth is read (an event arriving meanwhile).
	during func()
	reads  int
}

func (m *mailSystem) Name() string { return m.name }

func (m *mailSystem) Counts(_ context.Context, boxes []sources.Mailbox) []sources.Count {
	if m.during != nil {
		m.during()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]sources.Count, len(boxes))
	for i, b := range boxes {
		m.reads++
		n, ok := m.box[b.User]
		if !ok {
			out[i].Err = sources.ErrNotServed
			continue
		}
		out[i].Unread = n
	}
	return out
}

func (m *mailSystem) set(user string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.box[user] = n
}

// harness is a reconciler on an embedded JetStream, with what the
// dispatcher would do (publish and apply events) done by hand.
type harness struct {
	t     *testing.T
	js    jetstream.JetStream
	keyer *events.Keyer
	state *unread.Store
	r     *Reconciler
	reg   *prometheus.Registry
}

func newHarness(t *testing.T, conn *broker.Conn, cfg Config) *harness {
	t.Helper()
	keyer := brokertest.Keyer(t, conn)
	ctx := context.Background()
	state, err := unread.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.NC, cfg.JS, cfg.Keyer, cfg.Log, cfg.Metrics = conn.NC, conn.JS, keyer, zerolog.Nop(), reg
	r, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, js: conn.JS, keyer: keyer, state: state, r: r, reg: reg}
}

// run runs the reconciler until the test ends and returns the context
// it runs in.
func (h *harness) run() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.r.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Error(err)
		}
	})
	return ctx
}

// waitExact waits, up to 10 s, for user's state to be the exact count.
func (h *harness) waitExact(user string, count int) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := h.apply(user)
		if st.Exact && st.Count == count {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s's state %+v, want the exact count %d", user, st, count)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publish stores an event of user and returns its sequence.
func (h *harness) publish(user string, kind events.Kind, count *int) uint64 {
	h.t.Helper()
	return h.publishFrom(events.SourceNative, user, kind, count)
}

// publishFrom stores an event of user from source.
func (h *harness) publishFrom(source events.Source, user string, kind events.Kind, count *int) uint64 {
	h.t.Helper()
	e := events.Event{Tenant: tenant, User: user, Kind: kind, Unread: count,
		ChangeID: time.Now().Format(time.RFC3339Nano), OccurredAt: time.Now().UTC(), Source: source}
	e.Normalize()
	data, err := e.Encode()
	if err != nil {
		h.t.Fatal(err)
	}
	ack, err := h.js.Publish(context.Background(), h.keyer.Subject(tenant, user), data, jetstream.WithMsgID(h.keyer.MsgID(&e)))
	if err != nil {
		h.t.Fatal(err)
	}
	return ack.Sequence
}

// apply folds every stored event of user into its state, as the
// dispatcher does.
func (h *harness) apply(user string) unread.State {
	h.t.Helper()
	ctx := context.Background()
	st, err := h.state.Update(ctx, h.keyer.UserKey(tenant, user), func(s unread.State) (unread.State, error) {
		for _, m := range brokertest.Messages(h.t, h.js, broker.StreamMail) {
			e, err := events.Decode(m.Data)
			if err != nil || e.User != user {
				continue
			}
			s, _ = unread.Apply(s, &e, m.Sequence, unread.Options{})
		}
		return s, nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) check(users ...string) []Result {
	h.t.Helper()
	us := make([]User, len(users))
	for i, u := range users {
		us[i] = User{Tenant: tenant, User: u}
	}
	return h.r.Check(context.Background(), TriggerRequest, us)
}

// checkCases are the outcomes of one check, each case with its own user.
var checkCases = []struct {
	name string
	// prepare stores events of user, applies them or not, and sets the
	// truth.
	prepare   func(h *harness, m *mailSystem, user string)
	want      Outcome
	wantTruth int
	// wantState is the count after the stored events are applied again;
	// -1: no snapshot expected.
	wantState int
}{
	{"exact and right", func(h *harness, m *mailSystem, user string) {
		h.publish(user, events.KindNew, events.IntPtr(2))
		h.apply(user)
		m.set(user, 2)
	}, Match, 2, -1},
	{"a lost event left it one short", func(h *harness, m *mailSystem, user string) {
		h.publish(user, events.KindNew, events.IntPtr(2))
		h.apply(user)
		m.set(user, 3)
	}, Corrected, 3, 3},
	{"an estimate that was right is made exact", func(h *harness, m *mailSystem, user string) {
		h.publish(user, events.KindNew, nil)
		h.apply(user)
		m.set(user, 1)
	}, Confirmed, 1, 1},
	{"a read the source never reported", func(h *harness, m *mailSystem, user string) {
		h.publish(user, events.KindNew, nil)
		h.publish(user, events.KindNew, nil)
		h.apply(user)
		m.set(user, 0)
	}, Corrected, 0, 0},
	{"the dispatcher has not applied the last event", func(h *harness, m *mailSystem, user string) {
		h.publish(user, events.KindNew, events.IntPtr(1))
		h.apply(user)
		h.publish(user, events.KindNew, events.IntPtr(2))
		m.set(user, 5)
	}, Behind, 0, -1},
	{"an event arrives while the truth is read", func(h *harness, m *mailSystem, user string) {
		h.publish(user, events.KindNew, events.IntPtr(1))
		h.apply(user)
		m.set(user, 7)
		m.during = func() { h.publish(user, events.KindNew, events.IntPtr(2)) }
	}, Raced, 7, -1},
	{"a user no counter serves", func(h *harness, m *mailSystem, user string) {
		h.publish(user, events.KindNew, events.IntPtr(1))
		h.apply(user)
	}, NotServed, 0, -1},
	{"the monitor's canary", func(h *harness, m *mailSystem, user string) {
		h.publishFrom(events.SourceCanary, user, events.KindSnapshot, events.IntPtr(2))
		h.apply(user)
		m.set(user, 0)
	}, Skipped, 0, -1},
	{"a user never seen", func(h *harness, m *mailSystem, user string) {
		m.set(user, 4)
	}, Corrected, 4, 4},
}

func TestCheck(t *testing.T) {
	runCheckCases(t, brokertest.Start(t))
}

// TestCheckOnCluster runs the checks on a 3-node cluster with replicated
// streams, where the stream refuses a snapshot against events proposed
// but not yet stored.
func TestCheckOnCluster(t *testing.T) {
	urls := brokertest.StartCluster(t, 3)
	ctx := context.Background()
	conn, err := broker.Connect(ctx, broker.Options{URLs: urls, Name: "reconcile-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	layout := broker.DefaultLayout()
	layout.Replicas = 3
	if err := broker.Provision(ctx, conn.JS, layout); err != nil {
		t.Fatal(err)
	}
	runCheckCases(t, conn)
}

func runCheckCases(t *testing.T, conn *broker.Conn) {
	m := &mailSystem{name: "test", box: map[string]int{}}
	h := newHarness(t, conn, Config{Counters: []sources.Counter{m}})
	for i, tt := range checkCases {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			m.during = nil
			user := fmt.Sprintf("user%d@fabrikam.com", i)
			tt.prepare(h, m, user)
			before := len(brokertest.Messages(t, h.js, broker.StreamMail))
			res := h.check(user)[0]
			if res.Outcome != tt.want || (tt.want != Behind && tt.want != NotServed && tt.want != Skipped && res.Truth != tt.wantTruth) {
				t.Fatalf("check = %+v, want outcome %s truth %d", res, tt.want, tt.wantTruth)
			}
			msgs := brokertest.Messages(t, h.js, broker.StreamMail)
			published := len(msgs) - before
			if tt.want == Raced {
				published-- // the event that raced
			}
			if tt.wantState < 0 {
				if published != 0 {
					t.Fatalf("%d snapshots published, want none", published)
				}
				return
			}
			if published != 1 || res.Seq != msgs[len(msgs)-1].Sequence {
				t.Fatalf("%d snapshots published (result seq %d), want one", published, res.Seq)
			}
			snap, err := events.Decode(msgs[len(msgs)-1].Data)
			if err != nil || snap.Kind != events.KindSnapshot || snap.Source != events.SourceReconcile {
				t.Fatalf("snapshot = %+v, %v", snap, err)
			}
			st := h.apply(user)
			if st.Count != tt.wantState || !st.Exact {
				t.Fatalf("state after the snapshot = %+v, want exact %d", st, tt.wantState)
			}
		})
	}
}

func TestCountersTriedInOrder(t *testing.T) {
	first := &mailSystem{name: "first", box: map[string]int{"alice@fabrikam.com": 1}}
	second := &mailSystem{name: "second", box: map[string]int{"bob@fabrikam.com": 2}}
	h := newHarness(t, brokertest.Start(t), Config{Counters: []sources.Counter{first, second}})
	got := h.check("alice@fabrikam.com", "bob@fabrikam.com", "carol@fabrikam.com")
	want := []struct {
		counter string
		outcome Outcome
	}{{"first", Corrected}, {"second", Corrected}, {"", NotServed}}
	for i, w := range want {
		if got[i].Counter != w.counter || got[i].Outcome != w.outcome {
			t.Errorf("user %d: %+v, want counter %q outcome %s", i, got[i], w.counter, w.outcome)
		}
	}
	if n := testutil.ToFloat64(h.r.m.drift.WithLabelValues(string(TriggerRequest), "second")); n != 1 {
		t.Errorf("drift counted %v times for counter second, want 1", n)
	}
}

// TestEstimatedCountsAreChecked runs the reconciler: an event without a
// count queues its user, who is corrected after the delay; an event with
// the count drops the queued check.
func TestEstimatedCountsAreChecked(t *testing.T) {
	m := &mailSystem{name: "test", box: map[string]int{"alice@fabrikam.com": 0, "bob@fabrikam.com": 9}}
	h := newHarness(t, brokertest.Start(t), Config{Counters: []sources.Counter{m}, EstimatedDelay: 300 * time.Millisecond, RetryDelay: 50 * time.Millisecond, SweepPeriod: -1})
	h.run()

	h.publish("alice@fabrikam.com", events.KindNew, nil) // read since, never reported
	h.apply("alice@fabrikam.com")
	h.publish("bob@fabrikam.com", events.KindNew, nil)
	h.publish("bob@fabrikam.com", events.KindSnapshot, events.IntPtr(9))
	h.apply("bob@fabrikam.com")

	h.waitExact("alice@fabrikam.com", 0)
	m.mu.Lock()
	reads := m.reads
	m.mu.Unlock()
	if reads != 1 {
		t.Fatalf("the mail system was asked %d times, want once (bob's count came with his last event)", reads)
	}
}

// TestAsk checks users through the on-demand subject, as pushctl does.
func TestAsk(t *testing.T) {
	m := &mailSystem{name: "test", box: map[string]int{"alice@fabrikam.com": 3}}
	h := newHarness(t, brokertest.Start(t), Config{Counters: []sources.Counter{m}, EstimatedDelay: -1, SweepPeriod: -1})
	ctx := h.run()
	var results []Result
	var err error
	for range 100 { // until the subscription is in place
		if results, err = Ask(ctx, h.r.cfg.NC, []User{{Tenant: "Fabrikam.com", User: "alice@fabrikam.com"}}); err != ErrNoReconciler {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Outcome != Corrected || results[0].Truth != 3 || results[0].Tenant != tenant {
		t.Fatalf("results = %+v", results)
	}
	st, err := AskStatus(ctx, h.r.cfg.NC)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Counters) != 1 || st.Counters[0] != "test" || len(st.Tenants) != 1 ||
		st.Tenants[0].Tenant != tenant || st.Tenants[0].Checks != 1 || st.Tenants[0].Drift != 1 || st.Tenants[0].LastDrift.IsZero() {
		t.Fatalf("status = %+v", st)
	}
	if _, err := Ask(ctx, h.r.cfg.NC, []User{{Tenant: "not a domain", User: "x"}}); err == nil {
		t.Fatal("a bad tenant was accepted")
	}
	if _, err := Ask(ctx, h.r.cfg.NC, nil); err == nil {
		t.Fatal("an empty request was accepted")
	}
}

// TestOneWaySourcesAreFollowedUp runs the reconciler on events of Dovecot's
// OX driver, which carry the count but never report reads: the user is
// checked again while unread mail is left, so a read lowers the badge, and
// no longer once the mailbox has nothing unread.
func TestOneWaySourcesAreFollowedUp(t *testing.T) {
	const user = "alice@fabrikam.com"
	m := &mailSystem{name: "test", box: map[string]int{user: 2}}
	h := newHarness(t, brokertest.Start(t), Config{Counters: []sources.Counter{m}, EstimatedDelay: 100 * time.Millisecond, RetryDelay: 50 * time.Millisecond, SweepPeriod: -1})
	h.run()
	h.publishFrom(events.SourceDovecotOX, user, events.KindNew, events.IntPtr(2))
	h.apply(user)
	waitReads := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			m.mu.Lock()
			reads := m.reads
			m.mu.Unlock()
			if reads >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d reads of the mail system, want %d", reads, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitReads(2) // checked, right, and checked again
	m.set(user, 1)
	h.waitExact(user, 1)
	m.set(user, 0)
	h.waitExact(user, 0)
	h.r.mu.Lock()
	queued := h.r.queue.len()
	h.r.mu.Unlock()
	if queued != 0 {
		t.Fatalf("%d users still queued with nothing unread left", queued)
	}
}

// TestFollowUpsSurviveARestart starts a reconciler ten minutes after
// the events it must act on (its clock runs ahead): the user of a one-way
// source, followed up for an hour, is still checked, so a read made
// meanwhile lowers the badge; the user of an estimated event, whose check
// was due long before the restart, is not checked again.
func TestFollowUpsSurviveARestart(t *testing.T) {
	const alice, bob = "alice@fabrikam.com", "bob@fabrikam.com"
	m := &mailSystem{name: "test", box: map[string]int{alice: 2, bob: 5}}
	conn := brokertest.Start(t)
	h := newHarness(t, conn, Config{Counters: []sources.Counter{m}, SweepPeriod: -1})
	h.publishFrom(events.SourceDovecotOX, alice, events.KindNew, events.IntPtr(2))
	h.publish(bob, events.KindNew, nil)
	h.apply(alice)
	h.apply(bob)
	m.set(alice, 0) // read in another client; the OX driver never says so

	later := func() time.Time { return time.Now().Add(10 * time.Minute) }
	restarted := newHarness(t, conn, Config{Counters: []sources.Counter{m}, EstimatedDelay: 100 * time.Millisecond,
		FollowUp: time.Hour, RetryDelay: 50 * time.Millisecond, SweepPeriod: -1, Now: later})
	restarted.run()
	restarted.waitExact(alice, 0)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reads != 1 {
		t.Fatalf("the mail system was read %d times, want once (alice; bob's check was due before the restart)", m.reads)
	}
}

// TestWhichEventsAreChecked lists which events queue their user for a
// check: those that leave the Inbox count an estimate.
func TestWhichEventsAreChecked(t *testing.T) {
	h := newHarness(t, brokertest.Start(t), Config{Counters: []sources.Counter{&mailSystem{name: "test"}}, SweepPeriod: -1, FollowUp: -1})
	tests := []struct {
		name   string
		source events.Source
		kind   events.Kind
		box    string
		from   string
		count  *int
		queued bool
	}{
		{"new mail without a count", events.SourceNative, events.KindNew, events.Inbox, "", nil, true},
		{"new mail with the count", events.SourceNative, events.KindNew, events.Inbox, "", events.IntPtr(3), false},
		{"new mail in another folder", events.SourceNative, events.KindNew, "Sent", "", nil, false},
		{"a move into the Inbox", events.SourceNative, events.KindMoved, events.Inbox, "Archive", nil, true},
		{"other flags, as Dovecot reports them", events.SourceDovecotLua, events.KindFlags, events.Inbox, "", nil, false},
		{"a Graph update: maybe a read", events.SourceGraph, events.KindFlags, events.Inbox, "", nil, true},
		{"a Graph update in another folder", events.SourceGraph, events.KindFlags, "Archive", "", nil, false},
		{"a Graph deletion", events.SourceGraph, events.KindDeleted, events.Inbox, "", nil, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("user%d@fabrikam.com", i)
			e := events.Event{Tenant: tenant, User: user, Kind: tt.kind, Mailbox: tt.box, FromMailbox: tt.from, Unread: tt.count, Count: 1, Source: tt.source}
			before := h.r.queue.len()
			h.r.note(&e, time.Now(), false)
			if got := h.r.queue.len() > before; got != tt.queued {
				t.Fatalf("queued %v, want %v", got, tt.queued)
			}
		})
	}
}
