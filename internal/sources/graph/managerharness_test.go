package graph

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/sources/manage/managetest"
)

// managerKey is the key of the test endpoints' URLs.
const managerKey = "k3y-of-the-endpoints"

// testLifetime is the subscription lifetime of the manager tests.
const testLifetime = 3 * time.Hour

// listedUsers is a UserLister whose users a test changes.
type listedUsers struct {
	*managetest.List[ManagedUser]
}

func (l listedUsers) ListUsers(ctx context.Context) ([]ManagedUser, error) { return l.Users(ctx) }

// managerHarness runs Managers against fakeSubscriptions, with a
// notification endpoint (the source's Handshake) and a lifecycle endpoint
// (the current Manager's LifecycleHandler) that Graph validates.
type managerHarness struct {
	t         *testing.T
	clock     *managetest.Clock
	graph     *fakeSubscriptions
	store     SubscriptionStore
	users     listedUsers
	missed    *managetest.Calls
	log       *managetest.Log
	notify    *httptest.Server
	lifecycle *httptest.Server
	notifyReg *prometheus.Registry
	managers  *managetest.Managers[ManagerConfig, *Manager]
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
	h := &managerHarness{t: t, clock: managetest.NewClock(), store: NewMemorySubscriptionStore(), users: listedUsers{managetest.NewList(managerUsers(t)...)},
		missed: &managetest.Calls{}, log: &managetest.Log{}, notifyReg: prometheus.NewRegistry()}
	h.graph = newFakeSubscriptions(t, h.clock)
	h.managers = managetest.NewManagers(t, h.config, NewManager)
	src := newTestSource(t, func(c *Config) { c.Key, c.Metrics = managerKey, h.notifyReg })
	h.notify = httptest.NewServer(src.Handshake(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	})))
	t.Cleanup(h.notify.Close)
	h.lifecycle = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := h.managers.Current()
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
		Users: h.users, TenantID: tenantID, Tokens: staticTokens("static-token"), APIURL: h.graph.apiURL(),
		NotificationURL: h.notificationURL(), LifecycleURL: h.lifecycleURL(), ClientStates: []string{"previous-secret", secret},
		Key: managerKey, Store: h.store, Missed: h.missed.Record, Lifetime: testLifetime,
		Options: managetest.Options(h.graph.srv.Client(), h.clock, h.log),
	}
}

// manager makes a Manager (the lifecycle endpoint's from now on) without
// starting it.
func (h *managerHarness) manager(mutate func(*ManagerConfig)) *Manager {
	h.t.Helper()
	return h.managers.New(mutate)
}

// start makes a Manager, loads it and does what is due.
func (h *managerHarness) start(mutate func(*ManagerConfig)) *Manager {
	h.t.Helper()
	m := h.managers.New(mutate)
	managetest.Load(h.t, m.core)
	return m
}

// drain does what is due now, as Run would, until nothing is left.
func (m *Manager) drain(t testing.TB) {
	t.Helper()
	managetest.Drain(t, m.core)
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

// stored returns the store's states by user address, checking their
// keys.
func (h *managerHarness) stored() map[string]SubscriptionState {
	h.t.Helper()
	return managetest.ByUser(h.t, h.store, func(st SubscriptionState) (string, string) { return st.Tenant, st.User })
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
