package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/apns/apnstest"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

func TestBulkheadKeepsOrganizationsApart(t *testing.T) {
	slow, fast := newRecorder("fcm"), newRecorder("fcm") // one push service, one lane
	slow.gate = make(chan struct{})
	slow.started = make(chan providers.Badge, 10)
	released := sync.OnceFunc(func() { close(slow.gate) })
	defer released()
	h := newHarness(t, Config{ProviderLimit: Limit{Concurrency: 8, Timeout: time.Minute}, ProviderShare: 2},
		map[string]providers.Provider{"slow": slow, "fast": fast})
	contoso := newPartnerKey(t, "contoso.com")
	h.addPartner(contoso, "contoso-realm")

	// fabrikam.com's app is stuck: 2 of its 5 sends (its share) go out,
	// the other 3 queue behind them.
	answered := make(chan reply, 1)
	go func() {
		answered <- h.publish(relayproto.Request{Notifications: []relayproto.Notification{
			notification("a", 1, "slow", "d1", "slow", "d2", "slow", "d3", "slow", "d4", "slow", "d5")}})
	}()
	<-slow.started
	<-slow.started
	waitFor(t, "fabrikam's three other sends to queue", func() bool {
		return testutil.ToFloat64(h.srv.metrics.shareWaits.WithLabelValues("fabrikam.com", "slow", "fcm")) == 3
	})

	// contoso.com, on the same push service, still has 6 free slots.
	tok := contoso.token(t, func(o *tokens.IssuerOptions) { o.Realm = "contoso-realm" })
	req := relayproto.Request{Notifications: []relayproto.Notification{notification("b", 2, "fast", "p1", "fast", "p2", "fast", "p3")}}
	for _, d := range h.post("Bearer "+tok, "application/json", mustJSON(t, req)).response(t).Results[0].Devices {
		if d.Class != relayproto.ClassDelivered {
			t.Fatalf("contoso's device while fabrikam's app is stuck: %+v", d)
		}
	}

	released()
	for _, d := range (<-answered).response(t).Results[0].Devices {
		if d.Class != relayproto.ClassDelivered {
			t.Fatalf("fabrikam's device after release: %+v", d)
		}
	}
	slow.mu.Lock()
	peak := slow.peak
	slow.mu.Unlock()
	if peak != 2 {
		t.Fatalf("fabrikam's app had %d sends in flight at once, its share is 2", peak)
	}
}

// apnsService is a local APNs (HTTP/2 over TLS) that answers 200 after
// delay (until the request is cancelled), at once for the device token
// warmUp.
type apnsService struct {
	srv     *httptest.Server
	delay   time.Duration
	arrived chan struct{} // one value per delayed request

	mu            sync.Mutex
	active, peak  int
	stopDelaying  chan struct{}
	stopDelayOnce sync.Once
}

// warmUp is the device token an apnsService answers at once.
var warmUp = strings.Repeat("a", 64)

func newAPNsService(t testing.TB, delay time.Duration) *apnsService {
	t.Helper()
	s := &apnsService{delay: delay, arrived: make(chan struct{}, 1024), stopDelaying: make(chan struct{})}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.EnableHTTP2 = true
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	t.Cleanup(s.release)
	return s
}

func (s *apnsService) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if s.delay == 0 || strings.HasSuffix(r.URL.Path, "/"+warmUp) {
		return
	}
	s.mu.Lock()
	s.active++
	s.peak = max(s.peak, s.active)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	select {
	case <-time.After(s.delay):
	case <-r.Context().Done():
	case <-s.stopDelaying:
	}
}

// release makes delayed requests answer at once.
func (s *apnsService) release() { s.stopDelayOnce.Do(func() { close(s.stopDelaying) }) }

// peakActive is the most delayed requests the service had at once.
func (s *apnsService) peakActive() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// caFile writes the PEM of the certificate authority of the local push
// services (httptest's, the same for all) and returns its path.
func caFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "providers-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeAPNsKey writes a new APNs token signing key (.p8) and returns its
// path.
func writeAPNsKey(t testing.TB) string {
	t.Helper()
	path, _, err := apnstest.WriteKey(t.TempDir(), "ABC123DEFG")
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// addPartner registers a new signing certificate for org (realm org) and
// returns a token of it.
func (r *running) addPartner(t testing.TB, org string) string {
	t.Helper()
	k := newPartnerKey(t, org)
	r.registerPartner(t, k)
	return k.token(t, realmOf(k))
}

// registerPartner registers k's certificate for its organization, with
// the organization as realm.
func (r *running) registerPartner(t testing.TB, k partnerKey) {
	t.Helper()
	if _, _, err := r.store.AddCertificate(context.Background(), registry.CertificateRegistration{Organization: k.org, Realm: k.org, Certificate: k.cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
}

// realmOf is the issuer option of registerPartner's realm.
func realmOf(k partnerKey) func(*tokens.IssuerOptions) {
	return func(o *tokens.IssuerOptions) { o.Realm = k.org }
}

// addAPNsApp registers appID for org, sending to the APNs at host, and
// returns the answer for the warm-up device once it is wanted.
func (r *running) addAPNsApp(t testing.TB, token, org, appID, host string, wanted func(relayproto.DeviceResult) bool) relayproto.DeviceResult {
	t.Helper()
	app := registry.App{AppID: appID, Provider: registry.KindAPNs, Organizations: []string{org}, APNs: &registry.APNs{
		KeyFile: writeAPNsKey(t), KeyID: "ABC123DEFG", TeamID: "TEAM123456", Topic: appID, Environment: registry.APNsSandbox, Host: host,
	}}
	return r.addApp(t, token, app, warmUp, wanted)
}

// addApp registers app and publishes a badge for device with token until
// the answer is wanted (the relay's watches apply a registration, the
// partner's as well as the app's, moments later: until then the token is
// refused or the app unknown), and returns that answer.
func (r *running) addApp(t testing.TB, token string, app registry.App, device string, wanted func(relayproto.DeviceResult) bool) relayproto.DeviceResult {
	t.Helper()
	if _, err := r.store.AddApp(context.Background(), app, false); err != nil {
		t.Fatal(err)
	}
	req := relayproto.Request{Notifications: []relayproto.Notification{notification("warm-up", 0, app.AppID, device)}}
	var last relayproto.DeviceResult
	waitFor(t, app.AppID+"'s expected answer", func() bool {
		got := r.publish(t, token, req)
		if got.status == http.StatusUnauthorized {
			return false // the partner's registration is not applied yet
		}
		last = got.response(t).Results[0].Devices[0]
		return wanted(last)
	})
	return last
}

// delivered is an addApp condition.
func delivered(d relayproto.DeviceResult) bool { return d.Class == relayproto.ClassDelivered }

// load publishes req with token again and again until ctx ends, which
// also cancels the request in flight. It ignores the answers and stops at
// the first error, so it may run in its own goroutine.
func (r *running) load(ctx context.Context, token string, req relayproto.Request) {
	body, err := json.Marshal(req)
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		hr, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+DefaultBasePath+relayproto.PublishPath, bytes.NewReader(body))
		if err != nil {
			return
		}
		hr.Header.Set("Authorization", "Bearer "+token)
		hr.Header.Set("Content-Type", "application/json")
		resp, err := r.client.Do(hr)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// p99 is the 99th percentile of samples (nearest rank).
func p99(samples []time.Duration) time.Duration {
	s := slices.Clone(samples)
	slices.Sort(s)
	return s[int(math.Ceil(0.99*float64(len(s))))-1]
}

// TestSlowTenantDoesNotDelayAnother measures issue 11's bulkhead: two
// organizations, each with its own APNs app on its own local push
// service; fabrikam's answers after 5s, beyond the relay's provider
// timeout, so its sends are stuck for the whole timeout, all the time.
// contoso's push latency, measured at the relay's API, stays near its
// baseline measured before fabrikam's load. The first case is the control:
// with one organization+app allowed the whole pool (the shared lanes
// before bulkheads), contoso's pushes wait behind fabrikam's.
func TestSlowTenantDoesNotDelayAnother(t *testing.T) {
	if testing.Short() {
		t.Skip("measures latencies for seconds")
	}
	const (
		stall       = 5 * time.Second // fabrikam's push service answers after this
		timeout     = 3 * time.Second // the relay's provider timeout
		concurrency = 64              // the default
		pushes      = 50
	)
	tests := []struct {
		name        string
		share       int
		wantBlocked bool
		measure     int // pushes measured under load
	}{
		{name: "shared pool (control)", share: concurrency, wantBlocked: true, measure: 1},
		{name: "per organization+app share", share: 0, measure: pushes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slowAPNs, fastAPNs := newAPNsService(t, stall), newAPNsService(t, 0)
			r := startRelay(t, Config{
				ProviderLimit:  Limit{Concurrency: concurrency, Timeout: timeout},
				ProviderShare:  tt.share,
				ProviderCAFile: caFile(t, fastAPNs.srv),
				TenantRate:     -1,
			}, false)
			fabrikam, contoso := r.addPartner(t, "fabrikam.com"), r.addPartner(t, "contoso.com")
			r.addAPNsApp(t, fabrikam, "fabrikam.com", "com.fabrikam.mail", slowAPNs.srv.URL, delivered)
			r.addAPNsApp(t, contoso, "contoso.com", "com.contoso.mail", fastAPNs.srv.URL, delivered)

			push := func(i int) time.Duration {
				req := relayproto.Request{Notifications: []relayproto.Notification{
					notification(fmt.Sprintf("c%d", i), i, "com.contoso.mail", strings.Repeat("c", 64))}}
				start := time.Now()
				got := r.publish(t, contoso, req)
				took := time.Since(start)
				if d := got.response(t).Results[0].Devices[0]; !tt.wantBlocked && d.Class != relayproto.ClassDelivered {
					t.Fatalf("contoso's push %d: %+v", i, d)
				}
				return took
			}
			baseline := make([]time.Duration, pushes)
			for i := range baseline {
				baseline[i] = push(i)
			}
			base := p99(baseline)
			bound := base + max(50*time.Millisecond, 2*base)
			if bound > timeout/2 {
				t.Skipf("baseline p99 %s: the machine is too loaded to tell a %s stall apart", base, timeout)
			}

			// fabrikam's load: two publishers, each request 200 devices,
			// more than the whole pool, again and again.
			ctx, stop := context.WithCancel(context.Background())
			var load sync.WaitGroup
			defer func() { stop(); slowAPNs.release(); load.Wait() }()
			var devices []string
			for i := range 200 {
				devices = append(devices, "com.fabrikam.mail", fmt.Sprintf("%064x", i+1))
			}
			heavy := relayproto.Request{Notifications: []relayproto.Notification{notification("f1", 1, devices[:200]...), notification("f2", 1, devices[200:]...)}}
			for range 2 {
				load.Go(func() { r.load(ctx, fabrikam, heavy) })
			}
			want := min(max(tt.share, concurrency/shareDivisor), concurrency)
			for range want {
				select {
				case <-slowAPNs.arrived:
				case <-time.After(30 * time.Second):
					t.Fatalf("fabrikam's sends did not reach its push service")
				}
			}
			// All of fabrikam's slots are taken now (none frees before the
			// provider timeout).
			peak := slowAPNs.peakActive()

			loaded := make([]time.Duration, tt.measure)
			for i := range loaded {
				loaded[i] = push(i)
			}
			got := p99(loaded)
			t.Logf("contoso p99: baseline %s, with fabrikam's provider stuck %s (bound %s, %d pushes); fabrikam's sends in flight %d",
				base, got, bound, len(loaded), peak)
			if blocked := got > bound; blocked != tt.wantBlocked {
				t.Fatalf("contoso's p99 %s with fabrikam's push service stuck, baseline %s, bound %s: blocked=%v, want %v", got, base, bound, blocked, tt.wantBlocked)
			}
			if peak != want {
				t.Fatalf("fabrikam had %d sends in flight, want %d", peak, want)
			}
		})
	}
}
