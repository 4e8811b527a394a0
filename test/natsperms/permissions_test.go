// Package natsperms tests the NATS permissions the deployment ships
// (deploy/nats/permissions.conf): it starts a NATS server with that very
// file, runs ingest, a dispatcher, the relay, the monitor and the
// reconciler each with its own user, sends a device subscription and an
// event through them, corrects the badge by reconciliation, and checks that
// each component's forbidden actions are refused.
package natsperms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/subscriptions"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/compact"
	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/monitor"
	"github.com/pushproxy/pushproxy/internal/probe"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/relay"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/sourcestatus"
	"github.com/pushproxy/pushproxy/internal/tlstest"
	"github.com/pushproxy/pushproxy/test/partner"
)

const org = "fabrikam.com"

// users are the NATS users of permissions.conf.
var users = []string{"admin", "ingest", "dispatcher", "monitor", "relay", "reconciler"}

// natsServer is a NATS server with the shipped permissions that requires
// TLS with client certificates (mutual TLS), as a deployment should.
type natsServer struct {
	url string
	tls tlstest.Files
}

// startServer runs NATS with the shipped permissions behind mutual TLS.
func startServer(t *testing.T) natsServer {
	t.Helper()
	dir := t.TempDir()
	files := tlstest.Write(t, dir)
	perms, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "permissions.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "permissions.conf"), perms, 0o600); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\ninclude ./permissions.conf\n"+
		"tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true, timeout: 5 }\n",
		filepath.Join(dir, "js"), files.ServerCert, files.ServerKey, files.CA)
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		t.Setenv("PUSHPROXY_NATS_"+strings.ToUpper(u)+"_PASSWORD", password(u))
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	if err != nil {
		t.Fatalf("reading deploy/nats/permissions.conf: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return natsServer{url: srv.ClientURL(), tls: files}
}

// options are what a component configures to reach the server as user.
func (n natsServer) options(user string) broker.Options {
	return broker.Options{Name: user, URLs: []string{n.url}, User: user, Password: password(user),
		CAFile: n.tls.CA, CertFile: n.tls.ClientCert, KeyFile: n.tls.ClientKey}
}

func password(user string) string { return "test-password-of-" + user }

// connect connects as user.
func (n natsServer) connect(t *testing.T, ctx context.Context, user string) *broker.Conn {
	t.Helper()
	c, err := broker.Connect(ctx, n.options(user))
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestComponentsWorkWithTheirOwnUsers runs the whole pipeline with one
// NATS user per component: a subscription and an event become a push, the
// probe runs; then every forbidden action of each user is refused.
func TestComponentsWorkWithTheirOwnUsers(t *testing.T) {
	srv := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := srv.connect(t, ctx, "admin")
	if err := broker.Provision(ctx, admin.JS, broker.DefaultLayout()); err != nil {
		t.Fatal(err)
	}

	// What an operator sets up with pushctl (as admin).
	relayAddr, ingestAddr := nettest.FreeAddr(t), nettest.FreeAddr(t)
	p := partner.New(t, ctx, admin.JS, org, relayAddr)
	apps := p.Registry
	for _, app := range []string{"demo", monitor.DefaultCanaryAppID} {
		if _, err := apps.AddApp(ctx, registry.App{AppID: app, Provider: registry.KindLog, Organizations: []string{org}}, false); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := credentials.Open(ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := creds.Create(ctx, credentials.Spec{Kind: credentials.KindBearer, Tenants: []string{org}, Roles: []credentials.Role{credentials.RoleEvents, credentials.RoleSubscriptions}})
	if err != nil {
		t.Fatal(err)
	}

	// Each component with its own user.
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)
	ic, dc, mc, rc := srv.connect(t, ctx, "ingest"), srv.connect(t, ctx, "dispatcher"), srv.connect(t, ctx, "monitor"), srv.connect(t, ctx, "relay")
	recon := newReconciler(t, ctx, srv.connect(t, ctx, "reconciler"), log)
	icfg := ingest.DefaultConfig()
	icfg.Addr = ingestAddr
	exts, err := (&ingest.Extras{}).Extensions(ctx, ic, service.NewRegistry())
	if err != nil {
		t.Fatalf("ingest extensions as user ingest: %v", err)
	}
	run := map[string]func() error{
		"relay": func() error {
			return relay.Run(ctx, relay.Config{Addr: relayAddr, Host: "127.0.0.1"}, rc, log, service.NewRegistry())
		},
		"ingest": func() error { return ingest.Run(ctx, icfg, ic, log, service.NewRegistry(), exts...) },
		"dispatcher": func() error {
			return dispatcher.Run(ctx, dispatcher.Config{Tokens: p.Tokens, Coalesce: coalesce.Config{Window: 20 * time.Millisecond}},
				dc, log, service.NewRegistry())
		},
		"monitor": func() error {
			mcfg := monitor.Config{ProbeInterval: 200 * time.Millisecond, CertDir: p.CertDir,
				Canary: monitor.CanaryConfig{IngestURL: "http://" + ingestAddr, IngestToken: secret, Interval: 300 * time.Millisecond, Timeout: 10 * time.Second}}
			return monitor.Run(ctx, mcfg, mc, log, service.NewRegistry())
		},
		"reconciler": func() error { return recon.Run(ctx) },
	}
	var wg sync.WaitGroup
	for name, f := range run {
		wg.Go(func() {
			if err := f(); err != nil && ctx.Err() == nil {
				t.Errorf("%s with its own NATS user: %v", name, err)
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	base := "http://" + ingestAddr
	waitFor(t, "ingest ready", func() bool { return call(base+"/readyz", "", "", "") == http.StatusOK })
	if code := call(base+"/v1/subscriptions", secret, http.MethodPost, `{"tenant":"`+org+`","user":"alice@`+org+`","appId":"demo","deviceId":"phone-token-0123456789","platform":"APNS"}`); code != http.StatusCreated {
		t.Fatalf("subscribe: %d", code)
	}
	if code := call(base+"/v1/events", secret, http.MethodPost, `{"user":"alice@`+org+`","kind":"new","unread":3,"change_id":"m-1"}`); code != http.StatusOK {
		t.Fatalf("event: %d", code)
	}
	sent, err := admin.JS.Stream(ctx, broker.StreamSent)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the push recorded in PUSH_SENT", func() bool {
		info, err := sent.Info(ctx)
		return err == nil && info.State.Msgs > 0
	})
	// A new installation writes the compact encoding: ingest and the
	// dispatcher read the storage settings with their own users.
	for _, bucket := range []string{broker.BucketSubscriptions, broker.BucketUnread} {
		waitFor(t, "compact values in bucket "+bucket, func() bool { return allCompact(t, ctx, admin.JS, bucket) })
	}
	waitFor(t, "a probe result", func() bool {
		r, err := probe.Last(ctx, admin.JS, probe.SubjectConnectivity)
		return err == nil && r.Succeeded()
	})
	waitFor(t, "a canary run through ingest, dispatcher and relay", func() bool {
		r, err := probe.Last(ctx, admin.JS, probe.SubjectCanary)
		return err == nil && r.Succeeded()
	})
	// The reconciler, asked by pushctl (admin), reads alice's true count
	// (4, one more than the event said) and corrects her badge.
	var results []reconcile.Result
	waitFor(t, "the reconciler to answer", func() bool {
		results, err = reconcile.Ask(ctx, admin.NC, []reconcile.User{{Tenant: org, User: "alice@" + org}})
		return !errors.Is(err, reconcile.ErrNoReconciler)
	})
	if err != nil || results[0].Outcome != reconcile.Corrected || results[0].Truth != 4 {
		waitFor(t, "alice's event applied", func() bool {
			results, err = reconcile.Ask(ctx, admin.NC, []reconcile.User{{Tenant: org, User: "alice@" + org}})
			return err == nil && results[0].Outcome != reconcile.Behind
		})
		if err != nil || results[0].Outcome != reconcile.Corrected || results[0].Truth != 4 {
			t.Fatalf("reconciling alice as user reconciler: %+v, %v", results, err)
		}
	}

	if st, err := reconcile.AskStatus(ctx, admin.NC); err != nil || len(st.Tenants) != 1 {
		t.Fatalf("the reconciler's status (pushctl sources status): %+v, %v", st, err)
	}

	// Ingest keeps the Graph and EWS subscriptions it manages in their
	// buckets, and
	// asks the reconciler about users whose notifications Graph missed.
	gkv, err := ic.JS.KeyValue(ctx, broker.BucketGraphSubscriptions)
	if err != nil {
		t.Fatalf("ingest opening %s: %v", broker.BucketGraphSubscriptions, err)
	}
	gstore := graph.NewKVSubscriptionStore(gkv)
	gkey := graph.SubscriptionKey(org, "alice@"+org)
	if err := gstore.Put(ctx, gkey, graph.SubscriptionState{Tenant: org, User: "alice@" + org, SubscriptionID: "sub-1", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("ingest writing a Graph subscription: %v", err)
	}
	if got, err := gstore.List(ctx); err != nil || got[gkey].SubscriptionID != "sub-1" {
		t.Fatalf("ingest listing Graph subscriptions: %v %v", got, err)
	}
	if err := gstore.Delete(ctx, gkey); err != nil {
		t.Fatalf("ingest deleting a Graph subscription: %v", err)
	}
	ekv, err := ic.JS.KeyValue(ctx, broker.BucketEWSSubscriptions)
	if err != nil {
		t.Fatalf("ingest opening %s: %v", broker.BucketEWSSubscriptions, err)
	}
	estore := ews.NewKVSubscriptionStore(ekv)
	ekey := ews.SubscriptionKey(org, "alice@"+org)
	if err := estore.Put(ctx, ekey, ews.SubscriptionState{Tenant: org, User: "alice@" + org, SubscriptionID: "sub-1", Watermark: "w-1", InboxFolderID: "inbox-1"}); err != nil {
		t.Fatalf("ingest writing an EWS subscription: %v", err)
	}
	if got, err := estore.List(ctx); err != nil || got[ekey].Watermark != "w-1" {
		t.Fatalf("ingest listing EWS subscriptions: %v %v", got, err)
	}
	if err := estore.Delete(ctx, ekey); err != nil {
		t.Fatalf("ingest deleting an EWS subscription: %v", err)
	}
	if _, err := reconcile.Ask(ctx, ic.NC, []reconcile.User{{Tenant: org, User: "alice@" + org}}); err != nil {
		t.Fatalf("ingest asking the reconciler: %v", err)
	}
	// The monitor's sources page reads the same as pushctl sources status.
	if rep, err := sourcestatus.Collect(ctx, mc.NC, mc.JS, 2*time.Second); err != nil || rep.Ingests != 1 || rep.Reconciler == nil {
		t.Fatalf("the sources page as user monitor: %+v, %v", rep, err)
	}
	// pushctl sources status (admin) gathers the ingest's status.
	if sts, err := ingest.GatherStatus(ctx, admin.NC, 2*time.Second); err != nil || len(sts) != 1 || len(sts[0].Sources) == 0 {
		t.Fatalf("the ingest's status as admin: %+v, %v", sts, err)
	}
	// One ingest at a time manages them: it takes, reads and releases the
	// managers' lease.
	lease, err := broker.OpenLease(ctx, ic.JS, ingest.LeaseGraphSubscriptions)
	if err != nil {
		t.Fatalf("ingest opening its lease: %v", err)
	}
	if err := lease.Run(ctx, func(ctx context.Context) error {
		h, ok, err := broker.ReadLease(ctx, ic.JS, ingest.LeaseGraphSubscriptions)
		if err != nil || !ok || h.ID != lease.Holder() {
			return fmt.Errorf("reading the lease it holds: %+v %v %w", h, ok, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("ingest holding a lease: %v", err)
	}
	if _, ok, err := broker.ReadLease(ctx, ic.JS, ingest.LeaseGraphSubscriptions); err != nil || ok {
		t.Fatalf("ingest releasing a lease: %v %v", ok, err)
	}

	// The monitor's dead-letter check reads PUSH_DEAD's latest letter.
	dead, err := mc.JS.Stream(ctx, broker.StreamDead)
	if err != nil {
		t.Fatalf("monitor reading PUSH_DEAD: %v", err)
	}
	if _, err := dead.GetLastMsgForSubject(ctx, broker.SubjectDead+".>"); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("monitor reading the latest dead letter: %v", err)
	}

	// The dispatcher reads a user's devices with a batched direct get
	// (its device cache), which only a cluster routes through the
	// permissions' publish check; so it is checked here by name too.
	dkeyer, err := broker.Keyer(ctx, dc.JS)
	if err != nil {
		t.Fatal(err)
	}
	subs, err := subscriptions.Open(ctx, dc.JS, dkeyer)
	if err != nil {
		t.Fatalf("dispatcher opening the subscriptions: %v", err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	cache, err := subs.Cache(cctx, 0)
	if err != nil {
		t.Fatalf("dispatcher watching the subscriptions: %v", err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if devs, err := cache.ForUser(rctx, dkeyer.UserKey(org, "alice@"+org)); err != nil || len(devs) != 1 {
		t.Errorf("dispatcher reading alice's devices: %d, %v", len(devs), err)
	}

	refusals := []struct {
		user, action, subject string
	}{
		{"ingest", "publish", "$KV.unread.fabrikam_com.x"},
		{"ingest", "publish", "$KV.config.proxy"},
		{"ingest", "publish", "$KV.credentials.x"},
		{"ingest", "publish", "push.sent.fabrikam_com.x"},
		{"ingest", "publish", "$JS.API.STREAM.DELETE.MAIL"},
		{"ingest", "publish", "$JS.API.CONSUMER.CREATE.MAIL.x"},
		{"ingest", "publish", "$JS.API.DIRECT.GET.KV_unread.$KV.unread.fabrikam_com.x"},
		{"ingest", "subscribe", "mail.>"},
		{"ingest", "subscribe", "pushproxy.reconcile.check"},
		{"dispatcher", "publish", "mail.fabrikam_com.x"},
		{"dispatcher", "publish", "$KV.credentials.x"},
		{"dispatcher", "publish", "$KV.config.proxy"},
		{"dispatcher", "publish", "$JS.API.STREAM.DELETE.MAIL"},
		{"dispatcher", "publish", "$JS.API.STREAM.PURGE.PUSH_DEAD"},
		{"dispatcher", "subscribe", "mail.>"},
		{"dispatcher", "publish", "pushproxy.ingest.ews.observe"},
		{"relay", "subscribe", "pushproxy.ingest.ews.lookup"},
		{"reconciler", "publish", "pushproxy.ingest.graph.lifecycle"},
		{"monitor", "publish", "mail.fabrikam_com.x"},
		{"monitor", "publish", "$KV.unread.fabrikam_com.x"},
		{"monitor", "publish", "$KV.credentials.x"},
		{"monitor", "publish", "$JS.API.STREAM.DELETE.PUSH_DEAD"},
		{"monitor", "publish", "$JS.API.CONSUMER.CREATE.MAIL.x"},
		{"monitor", "publish", "$KV.leases.graph-subscriptions"},
		{"monitor", "publish", "pushproxy.reconcile.check"},
		{"relay", "publish", "mail.fabrikam_com.x"},
		{"relay", "publish", "$KV.relay_apps.demo"},
		{"relay", "publish", "$JS.API.DIRECT.GET.KV_config.$KV.config.auth"},
		{"relay", "publish", "$JS.API.STREAM.DELETE.KV_relay_apps"},
		{"relay", "subscribe", "pushproxy.dispatcher.members"},
		{"reconciler", "publish", "$KV.unread.fabrikam_com.x"},
		{"reconciler", "publish", "$KV.subscriptions.fabrikam_com.x"},
		{"reconciler", "publish", "$KV.credentials.x"},
		{"reconciler", "publish", "push.sent.fabrikam_com.x"},
		{"reconciler", "publish", "$JS.API.STREAM.DELETE.MAIL"},
		{"reconciler", "publish", "$JS.API.STREAM.PURGE.MAIL"},
		{"reconciler", "subscribe", "mail.>"},
		{"reconciler", "subscribe", "pushproxy.dispatcher.members"},
	}
	for _, r := range refusals {
		t.Run(r.user+"/"+r.action+"/"+r.subject, func(t *testing.T) {
			refused(t, srv, r.user, r.action, r.subject)
		})
	}
}

// refused checks that user may not publish to (or subscribe to) subject:
// the server answers with a permissions violation naming it.
func refused(t *testing.T, srv natsServer, user, action, subject string) {
	t.Helper()
	violations := make(chan error, 4)
	nc, err := nats.Connect(srv.url, nats.UserInfo(user, password(user)), nats.RootCAs(srv.tls.CA), nats.ClientCert(srv.tls.ClientCert, srv.tls.ClientKey),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			violations <- err
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	switch action {
	case "publish":
		err = nc.Publish(subject, []byte("{}"))
	case "subscribe":
		_, err = nc.SubscribeSync(subject)
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	select {
	case err := <-violations:
		if !strings.Contains(err.Error(), "Permissions Violation") || !strings.Contains(err.Error(), subject) {
			t.Fatalf("%s %s as %s: %v, want a permissions violation", action, subject, user, err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("%s %s as %s was not refused", action, subject, user)
	}
}

// call sends a request to ingest and returns the status (0 when it could
// not be sent).
func call(url, secret, method, body string) int {
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fixedCounts is the mail system of the test: alice has 4 unread messages.
type fixedCounts struct{}

func (fixedCounts) Name() string { return "test" }

func (fixedCounts) Counts(_ context.Context, boxes []sources.Mailbox) []sources.Count {
	out := make([]sources.Count, len(boxes))
	for i, b := range boxes {
		if b.User != "alice@"+org {
			out[i].Err = sources.ErrNotServed
			continue
		}
		out[i].Unread = 4
	}
	return out
}

// newReconciler returns a reconciler on conn that reads fixedCounts and
// checks estimated counts soon.
func newReconciler(t *testing.T, ctx context.Context, conn *broker.Conn, log zerolog.Logger) *reconcile.Reconciler {
	t.Helper()
	keyer, err := broker.Keyer(ctx, conn.JS)
	if err != nil {
		t.Fatalf("reading the subject key as user reconciler: %v", err)
	}
	r, err := reconcile.New(ctx, reconcile.Config{NC: conn.NC, JS: conn.JS, Keyer: keyer, Counters: []sources.Counter{fixedCounts{}},
		EstimatedDelay: 100 * time.Millisecond, SweepPeriod: time.Hour, Log: log, Metrics: service.NewRegistry()})
	if err != nil {
		t.Fatalf("starting the reconciler as user reconciler: %v", err)
	}
	return r
}

// allCompact reports whether bucket holds values and every one is in the
// compact encoding.
func allCompact(t *testing.T, ctx context.Context, js jetstream.JetStream, bucket string) bool {
	t.Helper()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		return false // none yet
	}
	for _, key := range keys {
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := compact.Sniff(e.Value()); err != nil || v != compact.Version1 {
			t.Fatalf("%s holds %s as %q, want the compact encoding", bucket, key, e.Value())
		}
	}
	return len(keys) > 0
}
