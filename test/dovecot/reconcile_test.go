package dovecot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/nettest"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/relay"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
	dovecotsource "github.com/pushproxy/pushproxy/internal/sources/dovecot"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/test/partner"
)

// estimatedDelay and sweepPeriod are the reconciler's bounded delays in
// this test.
const (
	estimatedDelay = 1500 * time.Millisecond
	sweepPeriod    = 10 * time.Second
)

// TestDovecotReconciles runs a real Dovecot with only the OX driver (which
// reports new mail and never reads) against the whole pipeline (ingest,
// dispatcher, relay with the log provider) and a reconciler reading
// doveadm's HTTP API:
//   - two new messages push an estimated 2;
//   - a message read over IMAP (no event) brings the badge to 1 within the
//     estimated delay;
//   - the badge follows further reads until nothing is unread (here an
//     expunge with doveadm, which no driver reports);
//   - mail delivered to a user whose events never reach ingest (the driver
//     is not enabled for bob: every event lost) reaches his badge within
//     the sweep period.
func TestDovecotReconciles(t *testing.T) {
	needDovecot(t, "Dovecot 2.3")
	conn := brokertest.Start(t)
	ingestAddr := startIngest(t, conn)
	pushes := startPipeline(t, conn)

	doveadmAddr := nettest.FreeAddr(t)
	oxAlone := func(s string) string {
		s = dropLine(t, s, "push_notification_driver = lua:")
		s = strings.Replace(s, "push_notification_driver2 = ox:", "push_notification_driver = ox:", 1)
		return s + countersConfig(doveadmAddr, writeMasterUsers(t))
	}
	d := startDovecot(t, ingestAddr, oxAlone)
	waitFor(t, "doveadm HTTP API", func() bool {
		c, err := net.Dial("tcp", doveadmAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	reg := startReconciler(t, conn, "http://"+doveadmAddr)
	d.doveadm(t, "mailbox", "metadata", "set", "-u", user, "-s", "", "/private/vendor/vendor.dovecot/http-notify", "user="+user)

	for i := 1; i <= 2; i++ {
		deliver(t, d.lmtp, fmt.Sprintf("From: Bob <bob@example.org>\r\nTo: <%s>\r\nSubject: %s %d\r\n\r\nHello body\r\n", user, subject, i))
	}
	pushes.waitFor(t, user, 2, 30*time.Second)

	m := dialIMAP(t, d.imap)
	m.cmd(t, "LOGIN %s %s", user, password)
	m.cmd(t, "SELECT INBOX")
	m.cmd(t, `UID STORE 1 +FLAGS (\Seen)`)
	m.cmd(t, "LOGOUT")
	read := time.Now()
	pushes.waitFor(t, user, 1, estimatedDelay+10*time.Second)
	t.Logf("the read reached the badge %s after it happened (estimated delay %s)", time.Since(read).Round(time.Millisecond), estimatedDelay)
	if n := drift(t, reg, reconcile.TriggerEstimated); n < 1 {
		t.Fatalf("%v badges corrected by following up the OX driver's events, want 1", n)
	}

	d.doveadm(t, "expunge", "-u", user, "mailbox", "INBOX", "all")
	expunged := time.Now()
	pushes.waitFor(t, user, 0, estimatedDelay+10*time.Second)
	t.Logf("the expunge reached the badge %s after it happened (estimated delay %s)", time.Since(expunged).Round(time.Millisecond), estimatedDelay)

	deliverTo(t, d.lmtp, bob, fmt.Sprintf("From: Carol <carol@example.org>\r\nTo: <%s>\r\nSubject: lost\r\n\r\nHello body\r\n", bob))
	delivered := time.Now()
	pushes.waitFor(t, bob, 1, sweepPeriod+10*time.Second)
	t.Logf("mail whose events were lost reached the badge %s after delivery (sweep period %s)", time.Since(delivered).Round(time.Millisecond), sweepPeriod)
	if n := drift(t, reg, reconcile.TriggerSweep); n < 1 {
		t.Fatalf("%v badges corrected by the sweep, want bob's", n)
	}
}

// drift reads pushproxy_reconcile_drift_total of trigger from reg.
func drift(t *testing.T, reg *prometheus.Registry, trigger reconcile.Trigger) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "pushproxy_reconcile_drift_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "trigger" && l.GetValue() == string(trigger) {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// bob is a second user, whose mail server never reports anything.
const bob = "bob@example.com"

// pushLog follows the counts pushed to the test users' devices.
type pushLog struct {
	keyer  *events.Keyer
	mu     sync.Mutex
	counts map[string][]int // by PUSH_SENT subject
}

func (p *pushLog) waitFor(t *testing.T, who string, count int, within time.Duration) {
	t.Helper()
	subject := pushlog.SentSubject(p.keyer.UserKey(tenant, who))
	deadline := time.Now().Add(within)
	for {
		p.mu.Lock()
		got := append([]int(nil), p.counts[subject]...)
		p.mu.Unlock()
		if len(got) > 0 && got[len(got)-1] == count {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pushed counts to %s %v, want the last to be %d within %s", who, got, count, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startPipeline runs a dispatcher and a relay with the log provider for
// example.com, subscribes a device of each test user, and follows the
// pushes recorded in PUSH_SENT.
func startPipeline(t *testing.T, conn *broker.Conn) *pushLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	relayAddr := nettest.FreeAddr(t)
	p := partner.New(t, ctx, conn.JS, tenant, relayAddr)
	if _, err := p.Registry.AddApp(ctx, registry.App{AppID: "demo", Provider: registry.KindLog, Organizations: []string{tenant}}, false); err != nil {
		t.Fatal(err)
	}
	keyer := brokertest.Keyer(t, conn)
	subs, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{user, bob} {
		if _, _, err := subs.Put(ctx, subscriptions.Subscription{Tenant: tenant, User: u, AppID: "demo", DeviceID: "phone-token-of-" + u, Platform: subscriptions.PlatformAPNS}); err != nil {
			t.Fatal(err)
		}
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := relay.Run(ctx, relay.Config{Addr: relayAddr, Host: "127.0.0.1"}, conn, log, service.NewRegistry()); err != nil && ctx.Err() == nil {
			t.Errorf("relay: %v", err)
		}
	})
	wg.Go(func() {
		cfg := dispatcher.Config{Tokens: p.Tokens, Coalesce: coalesce.Config{Window: 20 * time.Millisecond, Debounce: 50 * time.Millisecond}}
		if err := dispatcher.Run(ctx, cfg, conn, log, service.NewRegistry()); err != nil && ctx.Err() == nil {
			t.Errorf("dispatcher: %v", err)
		}
	})
	pushes := &pushLog{keyer: keyer, counts: map[string][]int{}}
	sub, err := conn.NC.Subscribe(broker.SubjectSent+".>", func(msg *nats.Msg) {
		var rec pushlog.SentRecord
		if json.Unmarshal(msg.Data, &rec) == nil {
			pushes.mu.Lock()
			pushes.counts[msg.Subject] = append(pushes.counts[msg.Subject], rec.Count)
			pushes.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		cancel()
		wg.Wait()
	})
	return pushes
}

// startReconciler runs a reconciler reading doveadm at url, with short
// bounded delays, and returns its metrics.
func startReconciler(t *testing.T, conn *broker.Conn, url string) *prometheus.Registry {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	counter, err := dovecotsource.NewDoveadm(dovecotsource.DoveadmConfig{URL: url, APIKey: doveadmAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	reg := service.NewRegistry()
	r, err := reconcile.New(ctx, reconcile.Config{NC: conn.NC, JS: conn.JS, Keyer: brokertest.Keyer(t, conn), Counters: []sources.Counter{counter},
		EstimatedDelay: estimatedDelay, SweepPeriod: sweepPeriod, Log: log, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reconciler: %v", err)
		}
	})
	return reg
}
