// Package managetest holds what the tests of the subscription managers
// (internal/sources/graph, internal/sources/ews) share: a clock that
// moves when told, a log buffer, recorders, a list a test changes, the
// Managers a test makes one after the other (Managers), the steps of Run
// done until nothing is left (Load, Drain), and the contract of a
// subscription store (CheckStores).
package managetest

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/logtest"
	"github.com/pushproxy/pushproxy/internal/sources/manage"
	"github.com/pushproxy/pushproxy/internal/sources/records"
)

// Start is when a Clock starts.
var Start = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// Clock moves only when told (Advance), or when a Sleep asks; or follows
// the real clock once told so (UseRealTime).
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	real   bool
	sleeps []time.Duration
}

// NewClock returns a Clock at Start.
func NewClock() *Clock { return &Clock{now: Start} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real {
		return time.Now()
	}
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Sleep records d and moves the clock by it, at once.
func (c *Clock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return ctx.Err()
}

// Slept returns the waits Sleep was asked for.
func (c *Clock) Slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sleeps)
}

// UseRealTime makes Now the real time.
func (c *Clock) UseRealTime() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.real = true
}

// Never is an After that never fires: a Run under test waits for work.
func Never(time.Duration) <-chan time.Time { return nil }

// Log is a log destination several goroutines write to.
type Log = logtest.Buffer

// Calls records the calls of a callback about a user (ManagerConfig's
// Resync, Missed) as "tenant user".
type Calls struct {
	mu    sync.Mutex
	calls []string
}

// Record is the callback.
func (c *Calls) Record(_ context.Context, tenant, user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, tenant+" "+user)
}

// Got returns the calls so far.
func (c *Calls) Got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// List is a list of users a test changes, or makes fail.
type List[U any] struct {
	mu    sync.Mutex
	users []U
	err   error
}

// NewList returns a List of users.
func NewList[U any](users ...U) *List[U] { return &List[U]{users: users} }

// Users returns the users, or the error Fail set.
func (l *List[U]) Users(context.Context) ([]U, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.users), l.err
}

// Set makes users the list.
func (l *List[U]) Set(users ...U) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users = users
}

// Fail makes Users answer err (nil: the list again).
func (l *List[U]) Fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
}

// Options are the manage.Options of a test's Managers: requests sent with
// client one at a time without a rate limit to speak of, clock's time and
// waits, no timers (Never), logs to log and metrics in a registry of their
// own.
func Options(client *http.Client, clock *Clock, log *Log) manage.Options {
	return manage.Options{Client: client, Rate: 1e6, Concurrency: 1, Now: clock.Now, Sleep: clock.Sleep,
		After: Never, Log: zerolog.New(log), Metrics: prometheus.NewRegistry()}
}

// Managers makes the Managers of a test from one configuration, one after
// the other: the one made last is the current one, which the test's
// endpoints serve.
type Managers[C, M any] struct {
	t          testing.TB
	config     func() C
	newManager func(C) (M, error)

	mu      sync.Mutex
	current M
}

// NewManagers returns Managers that make each Manager with newManager
// from config(), as New's mutate changes it.
func NewManagers[C, M any](t testing.TB, config func() C, newManager func(C) (M, error)) *Managers[C, M] {
	return &Managers[C, M]{t: t, config: config, newManager: newManager}
}

// New makes a Manager, without loading it, from the configuration as
// mutate changes it (nil: unchanged); it is the current one from now on.
func (ms *Managers[C, M]) New(mutate func(*C)) M {
	ms.t.Helper()
	cfg := ms.config()
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := ms.newManager(cfg)
	if err != nil {
		ms.t.Fatalf("making a manager: %v", err)
	}
	ms.mu.Lock()
	ms.current = m
	ms.mu.Unlock()
	return m
}

// Current returns the Manager made last (the zero M before New).
func (ms *Managers[C, M]) Current() M {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.current
}

// Load reads the store and the list into c, as Run does first, then does
// what is due (Drain).
func Load[U any, S comparable, X, J any](t testing.TB, c *manage.Core[U, S, X, J]) {
	t.Helper()
	if err := c.Load(context.Background()); err != nil {
		t.Fatalf("loading the manager: %v", err)
	}
	Drain(t, c)
}

// Drain does what is due now, as Run would, until nothing is left: it
// fails the test when c makes no progress in 10 s.
func Drain[U any, S comparable, X, J any](t testing.TB, c *manage.Core[U, S, X, J]) {
	t.Helper()
	ctx := context.Background()
	for {
		started := c.Dispatch(ctx)
		c.Lock()
		inflight := c.InFlight()
		c.Unlock()
		if started == 0 && inflight == 0 {
			c.Tend()
			return
		}
		select {
		case <-c.Woken():
		case <-time.After(10 * time.Second):
			t.Fatal("the manager made no progress in 10 s")
		}
	}
}

// ByUser returns the records of store by user address (user of each),
// checking that each is under its user's key (records.UserKey).
func ByUser[S any](t testing.TB, store records.Store[S], user func(S) (tenant, address string)) map[string]S {
	t.Helper()
	states, err := store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]S{}
	for key, st := range states {
		tenant, address := user(st)
		if key != records.UserKey(tenant, address) {
			t.Errorf("state of %s under key %s", address, key)
		}
		out[address] = st
	}
	return out
}

// KVBucket opens bucket on an embedded JetStream with the provisioned
// layout, which creates it (so that the manager's name and the layout's
// agree).
func KVBucket(t *testing.T, bucket string) jetstream.KeyValue {
	t.Helper()
	conn := brokertest.Start(t)
	kv, err := conn.JS.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// FlakyStore is a store whose next FailPuts writes fail.
type FlakyStore[S any] struct {
	records.Store[S]
	mu       sync.Mutex
	failPuts int
}

// NewFlakyStore returns store failing its next failPuts writes.
func NewFlakyStore[S any](store records.Store[S], failPuts int) *FlakyStore[S] {
	return &FlakyStore[S]{Store: store, failPuts: failPuts}
}

// FailPuts makes the next n writes fail.
func (s *FlakyStore[S]) FailPuts(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failPuts = n
}

// Put fails, or writes.
func (s *FlakyStore[S]) Put(ctx context.Context, key string, st S) error {
	s.mu.Lock()
	fail := s.failPuts > 0
	if fail {
		s.failPuts--
	}
	s.mu.Unlock()
	if fail {
		return errors.New("the bucket is unavailable")
	}
	return s.Store.Put(ctx, key, st)
}

// StoreSteps are what CheckStores writes and reads.
type StoreSteps[S comparable] struct {
	// NotFound and Bad are what the errors of a missing and of an
	// unreadable record match.
	NotFound, Bad error
	// First and Second are two records; Changed replaces First.
	First, Second, Changed S
	// Key is the key of a record; Missing holds none; BadKey gets the
	// Unreadable records (by name), one after the other.
	Key        func(S) string
	Missing    string
	BadKey     string
	Unreadable map[string]string
}

// CheckStores runs the same steps on a memory and a KV store of a source:
// an empty list, writes and a rewrite, a missing key, unreadable records
// left out of List with their error, deletes (twice). bucket is the KV
// store's bucket of the provisioned layout.
func CheckStores[S comparable](t *testing.T, memory func() *records.Memory[S], kv func(jetstream.KeyValue) *records.KV[S], bucket string, steps StoreSteps[S]) {
	stores := []struct {
		name string
		make func(t *testing.T) (records.Store[S], func(key string, data []byte))
	}{
		{"memory", func(*testing.T) (records.Store[S], func(string, []byte)) {
			s := memory()
			return s, s.PutRaw
		}},
		{"NATS KV", func(t *testing.T) (records.Store[S], func(string, []byte)) {
			b := KVBucket(t, bucket)
			return kv(b), func(key string, data []byte) {
				if _, err := b.Put(context.Background(), key, data); err != nil {
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
			first, second := steps.Key(steps.First), steps.Key(steps.Second)
			want := map[string]S{first: steps.First, second: steps.Second}
			for key, state := range want {
				if err := s.Put(ctx, key, state); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Put(ctx, first, steps.Changed); err != nil {
				t.Fatal(err)
			}
			want[first] = steps.Changed
			if got, err := s.Get(ctx, first); err != nil || got != steps.Changed {
				t.Fatalf("Get: %+v, %v", got, err)
			}
			if _, err := s.Get(ctx, steps.Missing); !errors.Is(err, steps.NotFound) {
				t.Fatalf("Get of a missing key: %v", err)
			}
			if got, err := s.List(ctx); err != nil || !maps.Equal(got, want) {
				t.Fatalf("List: %v, %v", got, err)
			}
			// Unreadable records are left out and reported.
			for name, data := range steps.Unreadable {
				putRaw(steps.BadKey, []byte(data))
				if got, err := s.List(ctx); !errors.Is(err, steps.Bad) || !maps.Equal(got, want) {
					t.Fatalf("List with a record %s: %v, %v", name, got, err)
				}
				if _, err := s.Get(ctx, steps.BadKey); !errors.Is(err, steps.Bad) {
					t.Fatalf("Get of a record %s: %v", name, err)
				}
			}
			for _, key := range []string{steps.BadKey, second, second} {
				if err := s.Delete(ctx, key); err != nil {
					t.Fatalf("Delete %s: %v", key, err)
				}
			}
			delete(want, second)
			if got, err := s.List(ctx); err != nil || !maps.Equal(got, want) {
				t.Fatalf("List after deleting: %v, %v", got, err)
			}
		})
	}
}
