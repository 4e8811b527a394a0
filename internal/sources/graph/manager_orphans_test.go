package graph

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestManagerSweepsOrphans deletes the subscriptions to its endpoint
// that it does not keep (one with an older key, as a crash before the
// store recorded it leaves), reading every page of GET /subscriptions,
// and leaves other endpoints' subscriptions alone.
func TestManagerSweepsOrphans(t *testing.T) {
	h := newManagerHarness(t)
	m := h.start(nil)
	checkOps(t, h.graph.received(), sorted(ops("POST", userIDs...)))
	h.graph.plant("0rphan-of-alice", aliceID, h.notify.URL+"/v1/graph?key=an-older-key")
	h.graph.plant("foreign-of-bob", bobID, "https://other.example/hook")

	deleted, err := m.sweepOrphans(context.Background())
	if err != nil || deleted != 1 {
		t.Fatalf("sweep: %d deleted, %v", deleted, err)
	}
	// Five subscriptions, two a page: three pages, then the orphan.
	checkOps(t, h.graph.received(), sorted([]string{"GET subscriptions", "GET subscriptions", "GET subscriptions"}, ops("DELETE", aliceID)))
	checkCounter(t, "delete_orphan ok", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opDeleteOrphan, "ok")), 1)
	if len(h.stored()) != 3 {
		t.Fatalf("the kept subscriptions changed: %v", h.stored())
	}

	deleted, err = m.sweepOrphans(context.Background())
	if err != nil || deleted != 0 {
		t.Fatalf("second sweep: %d deleted, %v", deleted, err)
	}
	checkOps(t, h.graph.received(), []string{"GET subscriptions", "GET subscriptions"})
}

// TestSweepRefusesForeignNextLink never sends the token to a next page on
// another host.
func TestSweepRefusesForeignNextLink(t *testing.T) {
	h := newManagerHarness(t)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"value": []any{}, "@odata.nextLink": "https://elsewhere.example/v1.0/subscriptions?$skiptoken=x"})
	}))
	defer api.Close()
	m := h.manager(func(c *ManagerConfig) { c.APIURL, c.Client = api.URL+"/v1.0", api.Client() })
	if _, err := m.sweepOrphans(context.Background()); err == nil || !strings.Contains(err.Error(), "is not on") {
		t.Fatalf("sweep with a foreign next page: %v", err)
	}
}

func TestEndpointOf(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"https://Push.Example.com/v1/graph?key=a", "https://push.example.com/v1/graph"},
		{"https://push.example.com/v1/graph?key=b#x", "https://push.example.com/v1/graph"},
		{"https://push.example.com/v1/graph/lifecycle", "https://push.example.com/v1/graph/lifecycle"},
		{"not a url", ""},
		{"", ""},
	} {
		if got := endpointOf(tt.in); got != tt.want {
			t.Errorf("endpointOf(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
