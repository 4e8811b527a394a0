package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/sourcestatus"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

// doveadmServer speaks Dovecot's doveadm HTTP API for mailboxStatus, as
// Dovecot 2.3 answers it, with the unseen counts of its users.
type doveadmServer struct {
	key    string
	mu     sync.Mutex
	unseen map[string]int
}

func (d *doveadmServer) set(user string, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unseen[user] = n
}

func (d *doveadmServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/doveadm/v1" || r.Header.Get("Authorization") != "X-Dovecot-API "+base64.StdEncoding.EncodeToString([]byte(d.key)) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var cmds [][3]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&cmds); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var answers []any
	for _, c := range cmds {
		var params struct{ User string }
		var tag string
		_ = json.Unmarshal(c[1], &params)
		_ = json.Unmarshal(c[2], &tag)
		n, ok := d.unseen[params.User]
		if !ok {
			answers = append(answers, []any{"error", map[string]any{"type": "exitCode", "exitCode": 67}, tag})
			continue
		}
		answers = append(answers, []any{"doveadmResponse", []any{map[string]string{"mailbox": "INBOX", "unseen": strconv.Itoa(n)}}, tag})
	}
	_ = json.NewEncoder(w).Encode(answers)
}

// waitForCount waits until the user's last push carries count.
func waitForCount(t *testing.T, js jetstream.JetStream, keyer *events.Keyer, user string, count int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec := waitForSent(t, js, keyer, "example.com", user)
		if rec.Count == count {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the last push to %s carries %d, want %d", user, rec.Count, count)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStandaloneReconciles corrects badges through pushctl standalone with
// a doveadm counter: on demand (pushctl reconcile), and by itself for an
// estimated count after a read the mail server never reported.
func TestStandaloneReconciles(t *testing.T) {
	dir := t.TempDir()
	dove := &doveadmServer{key: "doveadm-secret", unseen: map[string]int{}}
	srv := httptest.NewServer(dove)
	defer srv.Close()
	keyFile := testfs.Write(t, dir, "doveadm-key", dove.key+"\n")
	ingestAddr, natsAddr, _, _ := startStandaloneWith(t, filepath.Join(dir, "data"), nil,
		"--doveadm-url", srv.URL, "--doveadm-api-key-file", keyFile, "--reconcile-estimated-delay", "300ms")
	nats := "--nats-url=nats://" + natsAddr
	base := "http://" + ingestAddr
	for _, u := range []string{"alice", "bob"} {
		if code := post(t, base+"/v1/subscriptions", `{"tenant":"example.com","user":"`+u+`@example.com","appId":"demo","deviceId":"phone-`+u+`","platform":"APNS"}`); code != http.StatusCreated {
			t.Fatalf("subscribe %s: %d", u, code)
		}
	}
	conn, keyer := connectStandalone(t, natsAddr)

	// On demand: alice's mail server lost an event; her badge shows 1 of 3.
	dove.set("alice@example.com", 3)
	dove.set("bob@example.com", 0)
	if code := post(t, base+"/v1/events", `{"user":"alice@example.com","kind":"new","unread":1,"change_id":"a-1"}`); code != http.StatusOK {
		t.Fatalf("event: %d", code)
	}
	waitForCount(t, conn.JS, keyer, "alice@example.com", 1)
	r := pushctl(t, "reconcile", "--user", "alice@example.com", nats)
	if r.code != 0 || !strings.Contains(r.stdout, "corrected") || !strings.Contains(r.stdout, "summary: 1 corrected") {
		t.Fatalf("pushctl reconcile --user: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitForCount(t, conn.JS, keyer, "alice@example.com", 3)

	// By itself: bob's new mail came without a count (an estimate, 1); he
	// read it in a client whose reads the server does not report.
	if code := post(t, base+"/v1/events", `{"user":"bob@example.com","kind":"new","change_id":"b-1"}`); code != http.StatusOK {
		t.Fatalf("event: %d", code)
	}
	waitForCount(t, conn.JS, keyer, "bob@example.com", 1)
	waitForCount(t, conn.JS, keyer, "bob@example.com", 0)

	// The whole tenant: every user with a device is checked; both right
	// now, and the monitor's canary is left to the canary.
	r = pushctl(t, "reconcile", "--tenant", "example.com", "-v", nats)
	if r.code != 0 || !strings.Contains(r.stdout, "summary: 2 match, 1 skipped") || !strings.Contains(r.stderr, "3 users checked") {
		t.Fatalf("pushctl reconcile --tenant: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// What the reconciler did, per tenant, and the (here empty) managed
	// subscriptions.
	r = pushctl(t, "sources", "status", nats)
	for _, want := range []string{"(1 ingests answered)", "native  example.com", "graph-subscriptions manager: not running",
		"Managed subscriptions", "none (ingest keeps them", "Reconciler: reads [doveadm]", "example.com"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("pushctl sources status lacks %q: %d\n%s%s", want, r.code, r.stdout, r.stderr)
		}
	}
	// The same on the sources page, on ingest's address in standalone.
	resp, err := http.Get(base + "/status/sources")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<td>native</td><td>example.com</td>") || !strings.Contains(string(page), "Reads doveadm") {
		t.Errorf("the sources page: %s\n%s", resp.Status, page)
	}
	// pushctl status names the ingest and its sources.
	r = pushctl(t, "status", "--listen", "500ms", nats)
	if !regexp.MustCompile(`(?m)^\S+/\d+ +native +1 +\d+ +\d{4}-`).MatchString(r.stdout) {
		t.Errorf("pushctl status lacks the ingest's native events:\n%s%s", r.stdout, r.stderr)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"reconcile", nats}, 2, "give --user or --tenant"},
		{[]string{"reconcile", "--tenant", "nobody.example", nats}, 1, "no user of nobody.example has a device subscription"},
	} {
		if r := pushctl(t, tt.args...); r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("pushctl %v: %d %q, want %d %q", tt.args, r.code, r.stderr, tt.code, tt.want)
		}
	}
}

// TestReconcileWithoutReconciler tells the operator what to start.
func TestReconcileWithoutReconciler(t *testing.T) {
	_, nats := startNATS(t)
	r := pushctl(t, "reconcile", "--user", "alice@example.com", nats)
	if r.code != 1 || !strings.Contains(r.stderr, "no reconciler is running") {
		t.Fatalf("%d %q", r.code, r.stderr)
	}
	r = pushctl(t, "sources", "status", nats)
	if r.code != 0 || !strings.Contains(r.stdout, "Reconciler: not running") {
		t.Fatalf("sources status without a reconciler: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestSourcesStatusSubscriptions summarises the subscriptions that ingest's
// managers keep, per source and tenant.
func TestSourcesStatusSubscriptions(t *testing.T) {
	conn, nats := startNATS(t)
	ctx := context.Background()
	gkv, err := conn.JS.KeyValue(ctx, broker.BucketGraphSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second)
	for _, u := range []string{"alice@example.com", "bob@example.com"} {
		if err := graph.NewKVSubscriptionStore(gkv).Put(ctx, graph.SubscriptionKey("example.com", u),
			graph.SubscriptionState{Tenant: "example.com", User: u, UserID: "id-" + u, SubscriptionID: "s-" + u, Resource: graph.InboxResource("id-" + u), Expires: expires, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	ekv, err := conn.JS.KeyValue(ctx, broker.BucketEWSSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	if err := ews.NewKVSubscriptionStore(ekv).Put(ctx, ews.SubscriptionKey("contoso.com", "carol@contoso.com"),
		ews.SubscriptionState{Tenant: "contoso.com", User: "carol@contoso.com", SubscriptionID: "e-1", InboxFolderID: "inbox-1", Subscribed: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	// An ingest runs the Graph manager: it holds the lease.
	lease, err := broker.OpenLease(ctx, conn.JS, ingest.LeaseGraphSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	leaseCtx, release := context.WithCancel(ctx)
	leaseDone := make(chan error, 1)
	go func() {
		leaseDone <- lease.Run(leaseCtx, func(ctx context.Context) error {
			close(held)
			<-ctx.Done()
			return nil
		})
	}()
	defer func() {
		release()
		if err := <-leaseDone; err != nil {
			t.Error(err)
		}
	}()
	<-held
	r := pushctl(t, "sources", "status", nats, "--json", "--wait", "100ms")
	var rep sourcestatus.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil {
		t.Fatalf("%d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	got := map[string]sourcestatus.SubscriptionSummary{}
	for _, s := range rep.Subscriptions {
		got[s.Source+" "+s.Tenant] = s
	}
	if g := got["graph example.com"]; g.Count != 2 || !g.NextExpiry.Equal(expires) {
		t.Errorf("graph example.com: %+v, want 2 expiring %s", g, expires)
	}
	if e := got["ews contoso.com"]; e.Count != 1 || e.OldestHeard.IsZero() {
		t.Errorf("ews contoso.com: %+v", e)
	}
	if len(got) != 2 || rep.Reconciler != nil || rep.Ingests != 0 {
		t.Errorf("report %+v", rep)
	}
	managers := map[string]string{}
	for _, m := range rep.Managers {
		managers[m.Lease] = m.Holder
	}
	if managers[ingest.LeaseGraphSubscriptions] != lease.Holder() || managers[ingest.LeaseEWSSubscriptions] != "" || len(managers) != 2 {
		t.Errorf("managers %+v, want graph run by %s, ews by nobody", rep.Managers, lease.Holder())
	}
}
