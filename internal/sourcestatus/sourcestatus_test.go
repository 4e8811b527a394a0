package sourcestatus

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/sources/imap"
)

// TestCollect reads the managed subscriptions and the managers' leases
// from a real JetStream; no ingest and no reconciler answer.
func TestCollect(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	gkv, err := conn.JS.KeyValue(ctx, broker.BucketGraphSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	for i, u := range []string{"bob@example.com", "alice@example.com"} {
		st := graph.SubscriptionState{Tenant: "example.com", User: u, UserID: "id-" + u, SubscriptionID: "s-" + u,
			Resource: graph.InboxResource("id-" + u), Expires: expires.Add(time.Duration(i) * time.Hour), Created: time.Now()}
		if err := graph.NewKVSubscriptionStore(gkv).Put(ctx, graph.SubscriptionKey("example.com", u), st); err != nil {
			t.Fatal(err)
		}
	}
	ekv, err := conn.JS.KeyValue(ctx, broker.BucketEWSSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	heard := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	if err := ews.NewKVSubscriptionStore(ekv).Put(ctx, ews.SubscriptionKey("contoso.com", "carol@contoso.com"),
		ews.SubscriptionState{Tenant: "contoso.com", User: "carol@contoso.com", SubscriptionID: "e-1", InboxFolderID: "inbox-1", Subscribed: heard}); err != nil {
		t.Fatal(err)
	}
	lease, err := broker.OpenLease(ctx, conn.JS, ingest.LeaseEWSSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	leaseCtx, release := context.WithCancel(ctx)
	held, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- lease.Run(leaseCtx, func(ctx context.Context) error { close(held); <-ctx.Done(); return nil })
	}()
	defer func() { release(); <-done }()
	<-held

	rep, err := Collect(ctx, conn.NC, conn.JS, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := []SubscriptionSummary{
		{Source: "ews", Tenant: "contoso.com", Count: 1, OldestHeard: heard},
		{Source: "graph", Tenant: "example.com", Count: 2, NextExpiry: expires},
	}
	if len(rep.Subscriptions) != 2 {
		t.Fatalf("subscriptions %+v", rep.Subscriptions)
	}
	for i := range want {
		g := rep.Subscriptions[i]
		if g.Source != want[i].Source || g.Tenant != want[i].Tenant || g.Count != want[i].Count ||
			!g.NextExpiry.Equal(want[i].NextExpiry) || !g.OldestHeard.Equal(want[i].OldestHeard) {
			t.Errorf("subscriptions[%d] = %+v, want %+v", i, g, want[i])
		}
	}
	managers := map[string]string{}
	for _, m := range rep.Managers {
		managers[m.Lease] = m.Holder
	}
	if managers[ingest.LeaseEWSSubscriptions] != lease.Holder() || managers[ingest.LeaseGraphSubscriptions] != "" {
		t.Errorf("managers %+v", rep.Managers)
	}
	if rep.Ingests != 0 || len(rep.Activity) != 0 || rep.Reconciler != nil {
		t.Errorf("report %+v", rep)
	}
}

func TestHandler(t *testing.T) {
	now := time.Now().UTC()
	full := Report{
		Ingests:  2,
		Activity: []Activity{{Source: "dovecot", Tenant: "example.com", Events: 12, LastEvent: now.Add(-time.Minute)}},
		IMAP:     []imap.TenantStatus{{Tenant: "example.com", Watched: 3, Connected: 2}},
		Managers: []ManagerLease{{Lease: "graph-subscriptions", Holder: "host-a/12/abcd", Since: now.Add(-time.Hour)}, {Lease: "ews-subscriptions"}},
		Subscriptions: []SubscriptionSummary{{Source: "graph", Tenant: "example.com", Count: 2, NextExpiry: now.Add(48 * time.Hour)},
			{Source: "ews", Tenant: "contoso.com", Count: 1, OldestHeard: now.Add(-5 * time.Minute)}},
		Reconciler: &reconcile.Status{Counters: []string{"doveadm", "imap"}, Queued: 4, SweepUsers: 10, LastSweep: now.Add(-time.Hour),
			Tenants: []reconcile.TenantStatus{{Tenant: "example.com", Checks: 10, Drift: 1, Errors: 0, LastCheck: now, LastDrift: now}}},
	}
	tests := []struct {
		name   string
		report Report
		err    error
		query  string
		status int
		want   []string
	}{
		{"everything", full, nil, "", 200, []string{"2 ingests answered", "<td>dovecot</td><td>example.com</td><td class=\"n\">12</td>",
			"graph-subscriptions manager: run by host-a/12/abcd", "ews-subscriptions manager: not running", "Reads doveadm, imap; 4 users queued",
			"<td class=\"n\">3</td><td class=\"n\">2</td>"}},
		{"nothing yet", Report{}, nil, "", 200, []string{"0 ingests answered", "None.", "None (ingest keeps them", "Not running (cmd/reconciler"}},
		{"as JSON", full, nil, "?format=json", 200, []string{`"ingests":2`, `"holder":"host-a/12/abcd"`, `"counters":["doveadm","imap"]`}},
		{"NATS is down", Report{}, errors.New("nats: no servers available"), "", 503, []string{`"code":"unavailable"`, "no servers available"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Handler(func(context.Context) (Report, error) { return tt.report, tt.err })
			srv := httptest.NewServer(h)
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/status/sources" + tt.query)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d:\n%s", resp.StatusCode, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("body lacks %q:\n%s", w, body)
				}
			}
			if tt.query != "" {
				var back Report
				if err := json.Unmarshal(body, &back); err != nil || back.Ingests != tt.report.Ingests {
					t.Errorf("JSON does not read back: %v", err)
				}
			}
		})
	}
}
