package graph

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// managerKey is the key of the test endpoints' URLs.
const managerKey = "k3y-of-the-endpoints"

// testLifetime is the subscription lifetime of the manager tests.
const testLifetime = 3 * time.Hour

// listedUsers is a UserLister whose users a test changes.
type listedUsers struct {
	mu    sync.Mutex
	users []ManagedUser
	err   error
}

func (l *listedUsers) ListUsers(context.Context) ([]ManagedUser, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.users), l.err
}

func (l *listedUsers) set(users []ManagedUser) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users = users
}

// missedCalls records the calls of ManagerConfig.Missed.
type missedCalls struct {
	mu    sync.Mutex
	calls []string
}

func (c *missedCalls) record(_ context.Context, tenant, user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, tenant+" "+user)
}

func (c *missedCalls) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// syncBuffer is a log destination several goroutines write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// managerHarness runs Managers against fakeSubscriptions, with a
// notification endpoint (the source's Handshake) and a lifecycle endpoint
// (the current Manager's LifecycleHandler) that Graph validates.
type managerHarness struct {
	t         *testing.T
	clock     *fakeClock
	graph     *fakeSubscriptions
	store     SubscriptionStore
	users     *listedUsers
	missed    *missedCalls
	log       *syncBuffer
	notify    *httptest.Server
	lifecycle *httptest.Server
	notifyReg *prometheus.Registry

	mu      sync.Mutex
	current *Manager
}

// managerUsers are the users of the manager tests: alice, bob, carol (by
// her user principal name), and dave of another Entra tenant, whom the
// manager skips.
func managerUsers(t testing.TB) []ManagedUser {
	t.Helper()
	d, err := NewStaticDirectory([]DirectoryEntry{
		{UserID: aliceID, TenantID: tenantID, Tenant: "fabrikam.com", Address: "alice@fabrikam.com"},
		{UserID: bobID, Tenant: "fabrikam.com", Address: "bob@fabrikam.com"},
		{UserID: "carol@fabrikam.com", Tenant: "fabrikam.com", Address: "carol@fabrikam.com"},
		{UserID: daveID, TenantID: otherTenantID, Tenant: "fabrikam.com", Address: "dave@fabrikam.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	users, err := d.ListUsers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return users
}

func newManagerHarness(t *testing.T) *managerHarness {
	h := &managerHarness{t: t, clock: newFakeClock(), store: NewMemorySubscriptionStore(), users: &listedUsers{users: managerUsers(t)},
		missed: &missedCalls{}, log: &syncBuffer{}, notifyReg: prometheus.NewRegistry()}
	h.graph = newFakeSubscriptions(t, h.clock)
	src := newTestSource(t, func(c *Config) { c.Key, c.Metrics = managerKey, h.notifyReg })
	h.notify = httptest.NewServer(src.Handshake(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	})))
	t.Cleanup(h.notify.Close)
	h.lifecycle = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		m := h.current
		h.mu.Unlock()
		if m == nil {
			http.Error(w, "no manager", http.StatusServiceUnavailable)
			return
		}
		m.LifecycleHandler().ServeHTTP(w, r)
	}))
	t.Cleanup(h.lifecycle.Close)
	return h
}

func (h *managerHarness) notificationURL() string {
	return h.notify.URL + "/v1/graph?key=" + managerKey
}
func (h *managerHarness) lifecycleURL() string {
	return h.lifecycle.URL + "/v1/graph/lifecycle?key=" + managerKey
}

// config is the configuration of the harness's Managers: one request at
// a time, the test's clock, no rate limit to speak of.
func (h *managerHarness) config() ManagerConfig {
	return ManagerConfig{
		Users: h.users, TenantID: tenantID, Tokens: staticTokens("static-token"), APIURL: h.graph.apiURL(), Client: h.graph.srv.Client(),
		NotificationURL: h.notificationURL(), LifecycleURL: h.lifecycleURL(), ClientStates: []string{"previous-secret", secret},
		Key: managerKey, Store: h.store, Missed: h.missed.record, Lifetime: testLifetime, Rate: 1e6, Concurrency: 1,
		Now: h.clock.Now, Sleep: h.clock.Sleep, After: func(time.Duration) <-chan time.Time { return nil },
		Log: zerolog.New(h.log), Metrics: prometheus.NewRegistry(),
	}
}

// manager makes a Manager (the lifecycle endpoint's from now on) without
// starting it.
func (h *managerHarness) manager(mutate func(*ManagerConfig)) *Manager {
	h.t.Helper()
	cfg := h.config()
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.current = m
	h.mu.Unlock()
	return m
}

// start makes a Manager, loads it and does what is due.
func (h *managerHarness) start(mutate func(*ManagerConfig)) *Manager {
	h.t.Helper()
	m := h.manager(mutate)
	if err := m.load(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	m.drain(h.t)
	return m
}

// drain does what is due now, as Run would, until nothing is left.
func (m *Manager) drain(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	for {
		started := m.dispatch(ctx)
		m.mu.Lock()
		inflight := m.inflight
		m.mu.Unlock()
		if started == 0 && inflight == 0 {
			m.tend()
			return
		}
		select {
		case <-m.wake:
		case <-time.After(10 * time.Second):
			t.Fatal("the manager made no progress in 10 s")
		}
	}
}

// lifecycleBody is a lifecycle notification delivery of one event.
func lifecycleBody(event, subscriptionID, clientState string) string {
	return fmt.Sprintf(`{"value":[{"subscriptionId":%q,"subscriptionExpirationDateTime":"2030-06-01T15:00:00.0000000Z",`+
		`"tenantId":%q,"clientState":%q,"lifecycleEvent":%q}]}`, subscriptionID, tenantID, clientState, event)
}

// postLifecycle posts body to the lifecycle endpoint with query and
// returns the status and the body of the answer.
func (h *managerHarness) postLifecycle(query, body string) (int, string) {
	h.t.Helper()
	resp, err := http.Post(h.lifecycle.URL+"/v1/graph/lifecycle?"+query, "application/json", strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// stored returns the store's states by user address.
func (h *managerHarness) stored() map[string]SubscriptionState {
	h.t.Helper()
	states, err := h.store.List(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]SubscriptionState{}
	for key, st := range states {
		if key != SubscriptionKey(st.Tenant, st.User) {
			h.t.Errorf("state of %s under key %s", st.User, key)
		}
		out[st.User] = st
	}
	return out
}

// userIDs are the Graph user ids of the managed test users.
var userIDs = []string{aliceID, bobID, "carol@fabrikam.com"}

// ops builds the expected requests: method + " " + user id for each id.
func ops(method string, ids ...string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = method + " " + id
	}
	return out
}

// sorted joins lists of requests and sorts them, as received does.
func sorted(lists ...[]string) []string {
	out := slices.Concat(lists...)
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}
