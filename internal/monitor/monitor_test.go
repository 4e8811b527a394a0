package monitor_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/ingest/ingesttest"
	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/relayproto/relayprototest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/alerting"
	"github.com/pushproxy/pushproxy/internal/alerting/alertingtest"
	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/monitor"
	"github.com/pushproxy/pushproxy/internal/probe"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/tokens"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

const ingestToken = "ingest-secret"

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

// testRelay accepts any bearer token, answers every device delivered
// (monitoring ones included) and records what it got.
type testRelay struct{ *relayprototest.Relay }

func newRelay(t *testing.T) *testRelay { return &testRelay{relayprototest.NewRelay(t, nil)} }

// counts returns the unread counts pushed to appID, in order.
func (r *testRelay) counts(appID string) []int {
	var out []int
	for _, n := range r.Notifications() {
		if len(n.Recipients) > 0 && n.Recipients[0].AppID == appID {
			out = append(out, n.Payload.UnseenEmailCount)
		}
	}
	return out
}

// startIngest serves ingest's native API on a local server.
func startIngest(t *testing.T, conn *broker.Conn) string {
	t.Helper()
	cfg := ingest.DefaultConfig()
	cfg.NativeTokens = []string{ingestToken}
	return ingesttest.Serve(t, conn, cfg, ingest.Deps{}, nil)
}

// startDispatcher runs a real dispatcher pushing to uri until the test ends.
func startDispatcher(t *testing.T, conn *broker.Conn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dispatcher.Run(ctx, dispatcher.Config{
			Tokens: staticToken("token"),
			Relay:  relayclient.Config{Timeout: 5 * time.Second},
		}, conn, zerolog.Nop(), nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("dispatcher: %v", err)
		}
	})
}

type deployment struct {
	conn  *broker.Conn
	store *settings.Store
	subs  *subscriptions.Store
	keyer *events.Keyer
	relay *testRelay
	ctx   context.Context
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	conn := brokertest.Start(t)
	ctx := context.Background()
	store, err := settings.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	keyer := brokertest.Keyer(t, conn)
	subs, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		t.Fatal(err)
	}
	return &deployment{conn: conn, store: store, subs: subs, keyer: keyer, relay: newRelay(t), ctx: ctx}
}

func (d *deployment) enableProxy(t *testing.T) {
	t.Helper()
	if _, _, err := d.store.EnableProxy(d.ctx, "fabrikam.com", d.relay.URI()); err != nil {
		t.Fatal(err)
	}
}

// addCertificate creates the current signing certificate in a folder.
func (d *deployment) addCertificate(t *testing.T, validity time.Duration) string {
	t.Helper()
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "fabrikam.com", Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := onprem.Save(dir, cert); err != nil {
		t.Fatal(err)
	}
	if _, err := d.store.UpdateAuth(d.ctx, func(a *settings.Auth) error {
		a.CurrentCertificateThumbprint, a.CertificateDir = cert.Thumbprint(), dir
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCanary(t *testing.T) {
	d := newDeployment(t)
	d.enableProxy(t)
	ingestURL := startIngest(t, d.conn)
	cfg := monitor.CanaryConfig{IngestURL: ingestURL, IngestToken: ingestToken, Timeout: 3 * time.Second}

	t.Run("never arrives", func(t *testing.T) {
		r := monitor.NewCanary(cfg, d.conn.JS, d.store, d.subs, d.keyer).Run(d.ctx)
		if r.ResultType != probe.Failed || r.Class != relayclient.ClassUnknown ||
			!strings.Contains(r.Error, "did not come out as a push within 3s") || !strings.Contains(r.Error, "pushctl status") {
			t.Fatalf("result %+v", r)
		}
		subs, err := d.subs.List(d.ctx, "fabrikam.com", "canary@fabrikam.com")
		if err != nil || len(subs) != 1 || subs[0].AppID != monitor.DefaultCanaryAppID {
			t.Fatalf("canary device: %+v %v", subs, err)
		}
	})

	t.Run("wrong ingest token", func(t *testing.T) {
		bad := cfg
		bad.IngestToken = "nope"
		r := monitor.NewCanary(bad, d.conn.JS, d.store, d.subs, d.keyer).Run(d.ctx)
		if r.ResultType != probe.Failed || r.Class != relayclient.ClassAuthentication || !strings.Contains(r.Error, "--ingest-token") {
			t.Fatalf("result %+v", r)
		}
	})

	t.Run("arrives", func(t *testing.T) {
		startDispatcher(t, d.conn)
		cfg := cfg
		cfg.Timeout = 60 * time.Second
		canary := monitor.NewCanary(cfg, d.conn.JS, d.store, d.subs, d.keyer)
		for i := range 2 {
			r := canary.Run(d.ctx)
			if r.ResultType != probe.Succeeded || r.Latency <= 0 || r.Error != "" {
				t.Fatalf("run %d: %+v", i, r)
			}
		}
		counts := d.relay.counts(monitor.DefaultCanaryAppID)
		if len(counts) < 2 || counts[len(counts)-1] == counts[len(counts)-2] {
			t.Fatalf("canary pushes %v: want two different counts", counts)
		}
	})
}

func TestCanaryWithProxyDisabled(t *testing.T) {
	d := newDeployment(t)
	cfg := monitor.CanaryConfig{IngestURL: startIngest(t, d.conn), IngestToken: ingestToken, Timeout: time.Second}
	r := monitor.NewCanary(cfg, d.conn.JS, d.store, d.subs, d.keyer).Run(d.ctx)
	if r.ResultType != probe.Failed || r.Class != relayclient.ClassPushNotifications || !strings.HasPrefix(r.Error, probe.SettingsMissing) {
		t.Fatalf("result %+v", r)
	}
}

// runMonitor runs monitor.Run until the test ends and waits until its
// watchers follow PUSH_DEAD.
func runMonitor(t *testing.T, d *deployment, cfg monitor.Config) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- monitor.Run(ctx, cfg, d.conn, zerolog.Nop(), reg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("monitor.Run: %v", err)
		}
	})
	eventually(t, "the monitor watches PUSH_DEAD", func() bool {
		s, err := d.conn.JS.Stream(d.ctx, broker.StreamDead)
		if err != nil {
			return false
		}
		info, err := s.Info(d.ctx)
		return err == nil && info.State.Consumers > 0
	})
	return reg
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// fastRules are the default rules with windows and cool-downs short
// enough for a test.
func fastRules() []alerting.Rule {
	rules := alerting.DefaultRules()
	for i := range rules {
		if rules[i].Kind == alerting.KindRate {
			rules[i].Window = time.Second
		}
		rules[i].CoolDown = time.Second
	}
	return rules
}

// TestRunDeadLettersAlertUntilHandled stores a burst of dead letters: one
// alert fires, naming the tenant but not the user, and stays firing (the
// badges are stale) until the letters are discarded; then it resolves.
func TestRunDeadLettersAlertUntilHandled(t *testing.T) {
	d := newDeployment(t)
	am := alertingtest.New(t)
	var mu sync.Mutex
	var onNATS []alerting.Message
	sub, err := d.conn.NC.Subscribe(alerting.SubjectPrefix+".>", func(m *nats.Msg) {
		var msg alerting.Message
		if json.Unmarshal(m.Data, &msg) == nil && msg.Labels[alerting.LabelAlertName] == alerting.RuleDeadLetters {
			mu.Lock()
			onNATS = append(onNATS, msg)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	reg := runMonitor(t, d, monitor.Config{
		ProbeInterval: -1, CertCheckInterval: -1, DeadLetterCheckInterval: 100 * time.Millisecond,
		AlertmanagerURL: am.URL, AlertResend: -1, GeneratorURL: "http://monitor.test/metrics",
		Rules: fastRules(), EvaluateEvery: 100 * time.Millisecond,
	})

	key := d.keyer.UserKey("fabrikam.com", "alice@fabrikam.com")
	for i := range 30 {
		dl := pushlog.DeadLetter{Tenant: "fabrikam.com", User: "alice@fabrikam.com", UserKey: key, Reason: pushlog.ReasonExhausted,
			Attempts: 5, LastError: "relay answered 503", Sequences: []uint64{uint64(i + 1)}, DeadAt: time.Now()}
		data, _ := json.Marshal(dl)
		if _, err := d.conn.JS.Publish(d.ctx, pushlog.DeadSubject(key), data); err != nil {
			t.Fatal(err)
		}
	}
	am.WaitFor(t, alerting.RuleDeadLetters, 60*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 1 })
	eventually(t, "the pending gauge counts the letters", func() bool {
		return gaugeValue(reg, "pushproxy_dead_letters_pending") == 30
	})
	// Far longer than any cool-down: nobody handled them, still firing.
	time.Sleep(1500 * time.Millisecond)
	if got := am.Alerts(alerting.RuleDeadLetters); len(got) != 1 || got[0].Resolved() {
		t.Fatalf("alertmanager got %+v while the letters wait, want one firing alert", got)
	}

	stream, err := d.conn.JS.Stream(d.ctx, "PUSH_DEAD")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(d.ctx); err != nil { // what discarding every letter does
		t.Fatal(err)
	}
	am.WaitFor(t, alerting.RuleDeadLetters, 60*time.Second, func(p []alertingtest.Posted) bool {
		return len(p) >= 2 && p[len(p)-1].Resolved()
	})
	time.Sleep(300 * time.Millisecond) // room for a stray extra post
	got := am.Alerts(alerting.RuleDeadLetters)
	if len(got) != 2 || got[0].Resolved() || !got[1].Resolved() || got[0].StartsAt != got[1].StartsAt {
		t.Fatalf("alertmanager got %+v, want one firing alert and one resolved notice", got)
	}
	if got[0].Labels["severity"] != "warning" || got[0].Labels["service"] != "pushproxy" ||
		!strings.Contains(got[0].Annotations["description"], "tenant fabrikam.com") || !strings.Contains(got[0].Annotations["description"], "30 dead letter(s)") ||
		got[0].GeneratorURL != "http://monitor.test/metrics" {
		t.Fatalf("firing alert %+v", got[0])
	}
	if strings.Contains(got[0].Annotations["description"], "alice") {
		t.Fatalf("the alert names the user: %q", got[0].Annotations["description"])
	}
	eventually(t, "both notices are on NATS", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(onNATS) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if onNATS[0].Status != "firing" || onNATS[1].Status != "resolved" {
		t.Fatalf("NATS notices %+v", onNATS)
	}
}

func TestRunAlertsOnAdvisoriesAndPrunedDevices(t *testing.T) {
	d := newDeployment(t)
	am := alertingtest.New(t)
	runMonitor(t, d, monitor.Config{
		ProbeInterval: -1, CertCheckInterval: -1, AlertmanagerURL: am.URL, AlertResend: -1,
		Rules: fastRules(), EvaluateEvery: 100 * time.Millisecond,
	})

	// A real MSG_TERMINATED advisory: a consumer of MAIL terminates an event.
	e := events.Event{Tenant: "fabrikam.com", User: "alice@fabrikam.com", Kind: events.KindNew, ChangeID: "x", OccurredAt: time.Now()}
	e.Normalize()
	data, _ := e.Encode()
	if _, err := d.conn.JS.Publish(d.ctx, d.keyer.Subject(e.Tenant, e.User), data); err != nil {
		t.Fatal(err)
	}
	cons, err := d.conn.JS.CreateOrUpdateConsumer(d.ctx, broker.StreamMail, jetstream.ConsumerConfig{Durable: "test-term", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range msgs.Messages() {
		if err := m.TermWithReason("poison event for the test"); err != nil {
			t.Fatal(err)
		}
	}
	abandoned := am.WaitFor(t, alerting.RuleEventsAbandoned, 60*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 1 })
	if desc := abandoned[0].Annotations["description"]; !strings.Contains(desc, "consumer test-term terminated MAIL event 1: poison event for the test") {
		t.Fatalf("advisory alert description %q", desc)
	}

	// Pushes that lost many devices.
	for range 3 {
		rec := pushlog.SentRecord{Tenant: "fabrikam.com", UserKey: "fabrikam_com.x", Count: 1, Devices: 20, Gone: 15, Rejected: 5}
		data, _ := json.Marshal(rec)
		if _, err := d.conn.JS.Publish(d.ctx, pushlog.SentSubject("fabrikam_com.x"), data); err != nil {
			t.Fatal(err)
		}
	}
	pruned := am.WaitFor(t, alerting.RuleSubscriptionsPruned, 60*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 1 })
	if !strings.Contains(pruned[0].Annotations["description"], "15 gone and 5 rejected") {
		t.Fatalf("pruned alert %+v", pruned[0])
	}
}

func TestRunProbeAndCertificates(t *testing.T) {
	d := newDeployment(t)
	am := alertingtest.New(t)
	d.addCertificate(t, 20*24*time.Hour) // expires within 30 days
	addr := nettest.FreeAddr(t)
	reg := runMonitor(t, d, monitor.Config{
		ProbeInterval: 100 * time.Millisecond, CertCheckInterval: 100 * time.Millisecond,
		AlertmanagerURL: am.URL, AlertResend: -1,
		Rules: fastRules(), EvaluateEvery: 100 * time.Millisecond,
		HTTPAddr: addr,
	})

	// The proxy is disabled: the probe fails, twice in a row raises the alert.
	firing := am.WaitFor(t, alerting.RuleProbeFailing, 60*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 1 })
	if firing[0].Labels["severity"] != "critical" || !strings.Contains(firing[0].Annotations["description"], "PushNotifications failure: Push Notifications settings could not be found") {
		t.Fatalf("probe alert %+v", firing[0])
	}
	last, err := probe.Last(d.ctx, d.conn.JS, probe.SubjectConnectivity)
	if err != nil || last.ResultType != probe.Failed {
		t.Fatalf("PROBES: %+v %v", last, err)
	}

	d.enableProxy(t)
	am.WaitFor(t, alerting.RuleProbeFailing, 60*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 2 && p[len(p)-1].Resolved() })
	eventually(t, "the probe metrics show a success", func() bool {
		return gaugeValue(reg, "pushproxy_probe_last_success") == 1
	})
	if n := len(d.relay.counts(relayproto.MonitoringAppID)); n == 0 {
		t.Fatal("the relay got no monitoring notification")
	}

	for path, want := range map[string]string{
		"/healthz": `"ok"`,
		"/readyz":  `"ready"`,
		"/metrics": "pushproxy_probe_consecutive_failures 0",
		// The sources page: no ingest runs in this test.
		monitor.SourcesPath: "0 ingests answered",
	} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s, want %q in\n%.2000s", path, resp.Status, want, body)
		}
	}

	cert := am.WaitFor(t, alerting.RuleCertificateExpiring, 60*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 1 })
	if cert[0].Labels["certificate"] != "current" || !strings.Contains(cert[0].Annotations["description"], "in 19 day(s)") {
		t.Fatalf("certificate alert %+v", cert[0])
	}
	// Rotating to a certificate valid for a year resolves it.
	d.addCertificate(t, 365*24*time.Hour)
	am.WaitFor(t, alerting.RuleCertificateExpiring, 60*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 2 && p[len(p)-1].Resolved() })
}

// gaugeValue is the value of an unlabelled gauge gathered from reg; -1
// when it is not there.
func gaugeValue(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// TestCanaryNamesTheCauseWhenTheRelayIsDown runs the canary against a
// relay that refuses connections: the failure is Networking with the
// probe's words, not Unknown.
func TestCanaryNamesTheCauseWhenTheRelayIsDown(t *testing.T) {
	d := newDeployment(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/PushNotifications"
	ln.Close()
	if _, _, err := d.store.EnableProxy(d.ctx, "fabrikam.com", closed); err != nil {
		t.Fatal(err)
	}
	certDir := d.addCertificate(t, time.Hour)
	deps := probe.NewDeps(d.store, certDir, 2*time.Second)
	cfg := monitor.CanaryConfig{IngestURL: startIngest(t, d.conn), IngestToken: ingestToken, Timeout: 2 * time.Second,
		Diagnose: func(ctx context.Context) probe.Result { return probe.Run(ctx, deps) }}
	r := monitor.NewCanary(cfg, d.conn.JS, d.store, d.subs, d.keyer).Run(d.ctx)
	if r.ResultType != probe.Failed || r.Class != relayclient.ClassNetworking || !strings.Contains(r.Error, "connectivity probe fails too") {
		t.Fatalf("result %+v, want a Networking failure naming the probe's cause", r)
	}
}
