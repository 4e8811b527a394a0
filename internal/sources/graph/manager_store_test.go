package graph

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/sources/manage/managetest"
)

func testState(user, id string) SubscriptionState {
	created := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	return SubscriptionState{Tenant: "fabrikam.com", User: user, UserID: aliceID, SubscriptionID: id, Resource: InboxResource(aliceID),
		Expires: created.Add(MaxMailSubscriptionLifetime), ClientStateVersion: clientStateVersion(secret), URLVersion: "0123456789abcdef", Created: created}
}

func TestSubscriptionStores(t *testing.T) {
	renewed := testState("alice@fabrikam.com", "sub-a")
	renewed.LastRenewal = renewed.Created.Add(time.Hour)
	managetest.CheckStores(t, NewMemorySubscriptionStore, NewKVSubscriptionStore, SubscriptionBucket, managetest.StoreSteps[SubscriptionState]{
		NotFound: ErrSubscriptionNotFound, Bad: ErrBadSubscriptionRecord,
		First: testState("alice@fabrikam.com", "sub-a"), Second: testState("bob@fabrikam.com", "sub-b"), Changed: renewed,
		Key:     func(st SubscriptionState) string { return SubscriptionKey(st.Tenant, st.User) },
		Missing: SubscriptionKey("fabrikam.com", "nobody@fabrikam.com"), BadKey: SubscriptionKey("fabrikam.com", "carol@fabrikam.com"),
		Unreadable: map[string]string{"no subscription id": `{"subscription_id":""}`},
	})
}

// TestManagerWithKVStore restarts a Manager on the KV store: it creates
// nothing new.
func TestManagerWithKVStore(t *testing.T) {
	h := newManagerHarness(t)
	h.store = NewKVSubscriptionStore(managetest.KVBucket(t, SubscriptionBucket))
	h.start(nil)
	checkOps(t, h.graph.received(), sorted(ops("POST", userIDs...)))
	if len(h.stored()) != 3 {
		t.Fatalf("%d stored", len(h.stored()))
	}
	h.start(nil)
	checkOps(t, h.graph.received(), nil)
}

// TestManagerWritesWhatTheStoreMissed: a subscription created while the
// store failed is written later, without asking Graph again.
func TestManagerWritesWhatTheStoreMissed(t *testing.T) {
	h := newManagerHarness(t)
	h.store = managetest.NewFlakyStore(h.store, 1)
	m := h.start(nil)
	checkOps(t, h.graph.received(), sorted(ops("POST", userIDs...)))
	if n := len(h.stored()); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
	h.clock.Advance(DefaultErrorBackoff)
	m.drain(t)
	checkOps(t, h.graph.received(), nil)
	if n := len(h.stored()); n != 3 {
		t.Fatalf("%d stored after the retry, want 3", n)
	}
	checkCounter(t, "subscriptions{active}", testutil.ToFloat64(m.metrics.subscriptions.WithLabelValues("active")), 3)
}

// TestManagersTakeTurnsUnderALease runs two Managers as two ingests do,
// each under the same lease: the standby creates nothing and answers
// lifecycle notifications "retry later"; when the holder stops, the
// standby takes over from the store and creates nothing twice.
func TestManagersTakeTurnsUnderALease(t *testing.T) {
	h := newManagerHarness(t)
	h.clock.UseRealTime()
	layout := broker.DefaultLayout()
	layout.LeaseTTL = time.Second
	conn := brokertest.Start(t, brokertest.WithLayout(layout))
	kv, err := conn.JS.KeyValue(context.Background(), SubscriptionBucket)
	if err != nil {
		t.Fatal(err)
	}
	h.store = NewKVSubscriptionStore(kv)
	run := func(m *Manager) (stop func()) {
		lease, err := broker.OpenLease(context.Background(), conn.JS, "graph-subscriptions")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- lease.Run(ctx, m.Run) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run under the lease: %v", err)
			}
		}
	}
	loaded := func(m *Manager) bool {
		m.core.Lock()
		defer m.core.Unlock()
		return m.core.Loaded()
	}
	first := h.manager(func(c *ManagerConfig) { c.After = time.After })
	stopFirst := run(first)
	defer func() {
		if stopFirst != nil {
			stopFirst()
		}
	}()
	waitFor(t, "the first manager's subscriptions", func() bool { return len(h.stored()) == 3 })
	checkOps(t, h.graph.received(), sorted(ops("POST", userIDs...)))

	standby := h.manager(func(c *ManagerConfig) { c.After = time.After })
	stopStandby := run(standby)
	defer stopStandby()
	time.Sleep(2 * layout.LeaseTTL) // several renewals: the standby must stay out
	if loaded(standby) {
		t.Fatal("the standby manager runs while the first holds the lease")
	}
	if err := standby.Lifecycle(context.Background(), []byte(`{"value":[]}`)); err == nil || !strings.Contains(err.Error(), "not loaded") {
		t.Fatalf("standby's lifecycle answer: %v, want retry later", err)
	}
	checkOps(t, h.graph.received(), nil)

	stopFirst()
	stopFirst = nil
	waitFor(t, "the standby to take over", func() bool { return loaded(standby) })
	if loaded(first) {
		t.Fatal("the stopped manager still answers as loaded")
	}
	checkOps(t, h.graph.received(), nil)
	if len(h.stored()) != 3 {
		t.Fatalf("%d stored after the takeover", len(h.stored()))
	}
}
