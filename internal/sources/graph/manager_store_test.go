package graph

import (
	"context"
	"errors"
	"maps"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

// kvBucket opens the Manager's bucket on an embedded JetStream with the
// provisioned layout, which creates it (so the two names agree).
func kvBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	conn := brokertest.Start(t)
	kv, err := conn.JS.KeyValue(context.Background(), SubscriptionBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func testState(user, id string) SubscriptionState {
	created := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	return SubscriptionState{Tenant: "fabrikam.com", User: user, UserID: aliceID, SubscriptionID: id, Resource: InboxResource(aliceID),
		Expires: created.Add(MaxMailSubscriptionLifetime), ClientStateVersion: clientStateVersion(secret), URLVersion: "0123456789abcdef", Created: created}
}

func TestSubscriptionStores(t *testing.T) {
	stores := []struct {
		name string
		make func(t *testing.T) (SubscriptionStore, func(key string, data []byte))
	}{
		{"memory", func(*testing.T) (SubscriptionStore, func(string, []byte)) {
			s := NewMemorySubscriptionStore()
			return s, s.PutRaw
		}},
		{"NATS KV", func(t *testing.T) (SubscriptionStore, func(string, []byte)) {
			kv := kvBucket(t)
			return NewKVSubscriptionStore(kv), func(key string, data []byte) {
				if _, err := kv.Put(context.Background(), key, data); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			s, putRaw := st.make(t)
			if got, err := s.List(ctx); err != nil || len(got) != 0 {
				t.Fatalf("empty store lists %v, %v", got, err)
			}
			alice, bob := SubscriptionKey("fabrikam.com", "alice@fabrikam.com"), SubscriptionKey("fabrikam.com", "bob@fabrikam.com")
			want := map[string]SubscriptionState{alice: testState("alice@fabrikam.com", "sub-a"), bob: testState("bob@fabrikam.com", "sub-b")}
			renewed := want[alice]
			renewed.LastRenewal = renewed.Created.Add(time.Hour)
			for key, state := range want {
				if err := s.Put(ctx, key, state); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Put(ctx, alice, renewed); err != nil {
				t.Fatal(err)
			}
			want[alice] = renewed
			if got, err := s.Get(ctx, alice); err != nil || got != renewed {
				t.Fatalf("Get: %+v, %v", got, err)
			}
			if _, err := s.Get(ctx, SubscriptionKey("fabrikam.com", "nobody@fabrikam.com")); !errors.Is(err, ErrSubscriptionNotFound) {
				t.Fatalf("Get of a missing key: %v", err)
			}
			if got, err := s.List(ctx); err != nil || !maps.Equal(got, want) {
				t.Fatalf("List: %v, %v", got, err)
			}
			// An unreadable record is left out and reported.
			carol := SubscriptionKey("fabrikam.com", "carol@fabrikam.com")
			putRaw(carol, []byte(`{"subscription_id":""}`))
			if got, err := s.List(ctx); !errors.Is(err, ErrBadSubscriptionRecord) || !maps.Equal(got, want) {
				t.Fatalf("List with a bad record: %v, %v", got, err)
			}
			if _, err := s.Get(ctx, carol); !errors.Is(err, ErrBadSubscriptionRecord) {
				t.Fatalf("Get of a bad record: %v", err)
			}
			for _, key := range []string{carol, bob, bob} {
				if err := s.Delete(ctx, key); err != nil {
					t.Fatalf("Delete %s: %v", key, err)
				}
			}
			delete(want, bob)
			if got, err := s.List(ctx); err != nil || !maps.Equal(got, want) {
				t.Fatalf("List after deleting: %v, %v", got, err)
			}
		})
	}
}

func TestSubscriptionKey(t *testing.T) {
	valid := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`) // NATS KV keys
	tests := []struct{ tenant, address, same string }{
		{"fabrikam.com", "alice@fabrikam.com", ""},
		{"Fabrikam.COM.", "ALICE@fabrikam.com", "fabrikam_com."},
		{"xn--bcher-kva.example", "jörg@xn--bcher-kva.example", "xn--bcher-kva_example."},
	}
	first := SubscriptionKey(tests[0].tenant, tests[0].address)
	for i, tt := range tests {
		key := SubscriptionKey(tt.tenant, tt.address)
		if !valid.MatchString(key) || len(key) > 255 {
			t.Errorf("%s %s: key %q is not a KV key", tt.tenant, tt.address, key)
		}
		if i == 1 && key != first {
			t.Errorf("case changes the key: %q, %q", key, first)
		}
		if i == 2 && key[:len(tt.same)] != tt.same {
			t.Errorf("key %q does not start with %q", key, tt.same)
		}
	}
}

// TestManagerWithKVStore restarts a Manager on the KV store: it creates
// nothing new.
func TestManagerWithKVStore(t *testing.T) {
	h := newManagerHarness(t)
	h.store = NewKVSubscriptionStore(kvBucket(t))
	h.start(nil)
	checkOps(t, h.graph.received(), sorted(ops("POST", userIDs...)))
	if len(h.stored()) != 3 {
		t.Fatalf("%d stored", len(h.stored()))
	}
	h.start(nil)
	checkOps(t, h.graph.received(), nil)
}

// flakyStore fails the next puts.
type flakyStore struct {
	SubscriptionStore
	mu       sync.Mutex
	failPuts int
}

func (s *flakyStore) Put(ctx context.Context, key string, st SubscriptionState) error {
	s.mu.Lock()
	fail := s.failPuts > 0
	if fail {
		s.failPuts--
	}
	s.mu.Unlock()
	if fail {
		return errors.New("the bucket is unavailable")
	}
	return s.SubscriptionStore.Put(ctx, key, st)
}

// TestManagerWritesWhatTheStoreMissed: a subscription created while the
// store failed is written later, without asking Graph again.
func TestManagerWritesWhatTheStoreMissed(t *testing.T) {
	h := newManagerHarness(t)
	flaky := &flakyStore{SubscriptionStore: h.store, failPuts: 1}
	h.store = flaky
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
	h.clock.useRealTime()
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
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.loaded
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
