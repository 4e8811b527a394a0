package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/relay/webui"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/testfs"
	"github.com/pushproxy/pushproxy/internal/tlstest"
)

// running is a relay started with Run.
type running struct {
	base   string // scheme://host:port
	client *http.Client
	conn   *broker.Conn
	store  *registry.Store
	cancel context.CancelFunc
	done   chan error
}

// startRelay runs the relay on a loopback port with cfg (Host and Listener
// set here) over a real embedded NATS server. With tlsOn it serves HTTPS
// with a generated certificate that the returned client trusts.
func startRelay(t testing.TB, cfg Config, tlsOn bool) *running {
	t.Helper()
	conn := brokertest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host = testHost
	cfg.Listener = ln
	r := &running{base: "http://" + ln.Addr().String(), client: &http.Client{Timeout: 30 * time.Second}, conn: conn, done: make(chan error, 1)}
	if tlsOn {
		files := tlstest.Write(t, t.TempDir())
		cfg.TLSCertFile, cfg.TLSKeyFile = files.ServerCert, files.ServerKey
		pool := x509.NewCertPool()
		pemData, err := os.ReadFile(files.CA)
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(pemData)
		r.base = "https://" + ln.Addr().String()
		r.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- Run(ctx, cfg, conn, zerolog.Nop(), prometheus.NewRegistry()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop")
		}
	})
	waitFor(t, "the relay to be ready", func() bool {
		resp, err := r.client.Get(r.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if r.store, err = registry.Open(context.Background(), conn.JS); err != nil {
		t.Fatal(err)
	}
	return r
}

// publish posts req with token to the relay.
func (r *running) publish(t testing.TB, token string, req relayproto.Request) reply {
	t.Helper()
	return postTo(t, r.client, r.base+DefaultBasePath+relayproto.PublishPath, "Bearer "+token, "application/json", mustJSON(t, req))
}

// get fetches path and returns the status and body.
func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := r.client.Get(r.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestRunOverTLSWithLiveRegistries(t *testing.T) {
	ctx := context.Background()
	r := startRelay(t, Config{DevicesPage: true, DrainTimeout: 10 * time.Second}, true)
	fab := newPartnerKey(t, "fabrikam.com")
	token := fab.token(t)
	req := relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 4, "demo", "phone-1")}}

	// Not registered yet: refused.
	if got := r.publish(t, token, req); got.status != http.StatusUnauthorized {
		t.Fatalf("before registration: %d %s", got.status, got.body)
	}

	// Registered while the relay runs: picked up without a restart.
	if _, _, err := r.store.AddCertificate(ctx, registry.CertificateRegistration{Organization: "fabrikam.com", Realm: testRealm, Certificate: fab.cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.AddApp(ctx, registry.App{AppID: "demo", Provider: registry.KindLog}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the partner and app to be live", func() bool {
		got := r.publish(t, token, req)
		return got.status == http.StatusOK && got.response(t).Results[0].Devices[0].Status == relayproto.DeviceDelivered
	})

	// The log provider remembered the badge, for the devices page.
	status, body := r.get(t, "/devices/devices.json")
	var devices struct{ Devices []webui.Device }
	if err := json.Unmarshal([]byte(body), &devices); err != nil || status != 200 {
		t.Fatalf("devices.json %d %q: %v", status, body, err)
	}
	if len(devices.Devices) != 1 || devices.Devices[0].Count != 4 || devices.Devices[0].Tenant != "fabrikam.com" || devices.Devices[0].AppID != "demo" {
		t.Fatalf("devices %+v", devices.Devices)
	}
	if strings.Contains(body, "phone-1") {
		t.Fatal("the devices page shows a device address instead of its reference")
	}

	// Metadata and metrics are served too.
	if status, body := r.get(t, DefaultBasePath+relayproto.MetadataPath); status != 200 || !strings.Contains(body, `"allowedAudiences"`) {
		t.Fatalf("metadata %d %s", status, body)
	}
	_, metrics := r.get(t, "/metrics")
	for _, want := range []string{
		`pushproxy_relay_requests_total{outcome="ok"}`,
		`pushproxy_relay_requests_total{outcome="unauthorized"}`,
		`pushproxy_relay_deliveries_total{provider="log",status="delivered"}`,
		`pushproxy_relay_auth_failures_total{reason="unknown_key"}`,
		`pushproxy_relay_partners 1`,
		`pushproxy_relay_apps 1`,
		`pushproxy_relay_provider_duration_seconds_bucket{provider="log"`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Removing the app and then the partner takes effect on the running relay.
	if err := r.store.RemoveApp(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed app to be rejected", func() bool {
		got := r.publish(t, token, req)
		return got.status == http.StatusOK && got.response(t).Results[0].Devices[0].Class == relayproto.ClassAppFault
	})
	if _, err := r.store.RemovePartner(ctx, "fabrikam.com", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed partner to be refused", func() bool {
		return r.publish(t, token, req).status == http.StatusUnauthorized
	})

	// An open event stream does not hold up shutdown.
	resp, err := r.client.Get(r.base + "/devices/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("event stream starts with %q: %v", line, err)
	}
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(8 * time.Second):
		t.Fatal("shutdown waited for the event stream")
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	conn := brokertest.Start(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no host", Config{}, "host name is required"},
		{"half TLS", Config{Host: "h", TLSCertFile: "c.pem"}, "both a certificate file and a key file"},
		{"bad limit", Config{Host: "h", ProviderLimits: Limits{"apns": {Concurrency: 0}}}, "apns"},
		{"host with slash", Config{Host: "h/x", Addr: "127.0.0.1:0"}, "relay host"},
		{"missing TLS files", Config{Host: "h", Addr: "127.0.0.1:0", TLSCertFile: "/nonexistent/c.pem", TLSKeyFile: "/nonexistent/k.pem"}, "TLS"},
		{"public without public URL", Config{Host: "h", Addr: ":0"}, "--public-url"},
		{"public URL with a query", Config{Host: "h", Addr: ":0", PublicURL: "https://h/PushNotifications?x=1"}, "public URL"},
		{"missing provider CA file", Config{Host: "h", Addr: "127.0.0.1:0", ProviderCAFile: "/nonexistent/ca.pem"}, "provider CA file"},
		{"provider CA file without certificates", Config{Host: "h", Addr: "127.0.0.1:0", ProviderCAFile: testfs.Write(t, t.TempDir(), "ca.pem", "not a certificate")}, "no PEM certificate"},
		{"negative provider share", Config{Host: "h", Addr: "127.0.0.1:0", ProviderShare: -1}, "provider share"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := Run(ctx, tt.cfg, conn, zerolog.Nop(), prometheus.NewRegistry())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run() = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestRunForwardsThroughAPNs(t *testing.T) {
	ctx := context.Background()
	type push struct {
		token, topic string
		badge        int
		background   int
	}
	pushes := make(chan push, 10)
	apnsToken := func(c byte) string { return strings.Repeat(string(c), 64) }
	fake := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			APS struct {
				Badge            int `json:"badge"`
				ContentAvailable int `json:"content-available"`
			} `json:"aps"`
		}
		if r.ProtoMajor != 2 || !strings.HasPrefix(r.Header.Get("Authorization"), "bearer ") || json.NewDecoder(r.Body).Decode(&body) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		token := strings.TrimPrefix(r.URL.Path, "/3/device/")
		pushes <- push{token: token, topic: r.Header.Get("apns-topic"), badge: body.APS.Badge, background: body.APS.ContentAvailable}
		switch token {
		case apnsToken('b'):
			w.WriteHeader(http.StatusGone)
			fmt.Fprintf(w, `{"reason":"Unregistered","timestamp":%d}`, time.Now().UnixMilli())
		case apnsToken('c'):
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"reason":"TooManyRequests"}`)
		}
	}))
	fake.EnableHTTP2 = true
	fake.Config.ErrorLog = log.New(io.Discard, "", 0)
	fake.StartTLS()
	defer fake.Close()

	keyFile := writeAPNsKey(t)

	r := startRelay(t, Config{ProviderHTTPClient: fake.Client()}, false)
	fab := newPartnerKey(t, "fabrikam.com")
	if _, _, err := r.store.AddCertificate(ctx, registry.CertificateRegistration{Organization: "fabrikam.com", Realm: testRealm, Certificate: fab.cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	app := registry.App{AppID: "com.example.mail", Provider: registry.KindAPNs, APNs: &registry.APNs{
		KeyFile: keyFile, KeyID: "ABC123DEFG", TeamID: "TEAM123456", Topic: "com.example.mail", Environment: registry.APNsSandbox, Host: fake.URL,
	}, Organizations: []string{"fabrikam.com"}}
	if _, err := r.store.AddApp(ctx, app, false); err != nil {
		t.Fatal(err)
	}
	req := relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 3,
		"com.example.mail", apnsToken('a'), "com.example.mail", apnsToken('b'), "com.example.mail", apnsToken('c'))}}
	token := fab.token(t)
	var devices []relayproto.DeviceResult
	waitFor(t, "the APNs app to be live", func() bool {
		got := r.publish(t, token, req)
		if got.status != http.StatusOK {
			return false
		}
		devices = got.response(t).Results[0].Devices
		return devices[0].Class != relayproto.ClassAppFault
	})
	want := []struct {
		status  relayproto.DeviceStatus
		backOff int64
	}{{relayproto.DeviceDelivered, 0}, {relayproto.DeviceGone, 0}, {relayproto.DeviceRetry, 120000}}
	for i, w := range want {
		if devices[i].Status != w.status || devices[i].BackOffTimeInMilliseconds != w.backOff {
			t.Errorf("device %d: %+v, want %+v", i, devices[i], w)
		}
	}
	p := <-pushes
	if p.topic != "com.example.mail" || p.badge != 3 || p.background != 1 {
		t.Fatalf("APNs got %+v", p)
	}
}
