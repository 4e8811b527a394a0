package webpush

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/providerstest"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

const testSubject = "mailto:ops@pushproxy.example"

// browser is a subscriber: its key pair and auth secret, as a browser keeps
// them.
type browser struct {
	key  *ecdh.PrivateKey
	auth []byte
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	return &browser{key: key, auth: auth}
}

// subscription returns the browser's PushSubscription JSON for endpoint.
func (b *browser) subscription(endpoint string) string {
	s := Subscription{Endpoint: endpoint}
	s.Keys.P256DH = base64.RawURLEncoding.EncodeToString(b.key.PublicKey().Bytes())
	s.Keys.Auth = base64.RawURLEncoding.EncodeToString(b.auth)
	data, _ := json.Marshal(s)
	return string(data)
}

// delivery is a message the push service accepted, decrypted.
type delivery struct {
	path          string
	authorization string
	payload       map[string]any
}

// pushService is a test push service (RFC 8030) that checks VAPID (RFC 8292)
// against the application server key, and decrypts each message with the
// subscriber's keys (RFC 8291) before accepting it.
type pushService struct {
	t         *testing.T
	srv       *httptest.Server
	serverKey string // the applicationServerKey subscriptions were made with
	browsers  map[string]*browser

	mu         sync.Mutex
	deliveries []delivery
	respond    func(w http.ResponseWriter) bool // replaces the 201 if it returns true
}

var vapidHeader = regexp.MustCompile(`^vapid t=([A-Za-z0-9_.-]+), k=([A-Za-z0-9_-]+)$`)

func newPushService(t *testing.T, serverKey string) *pushService {
	return startPushService(t, serverKey, true)
}

// startPushService starts a test push service, over HTTPS (HTTP/2) when
// withTLS, plain HTTP otherwise.
func startPushService(t *testing.T, serverKey string, withTLS bool) *pushService {
	ps := &pushService{t: t, serverKey: serverKey, browsers: map[string]*browser{}}
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(ps.serve))
	if withTLS {
		ps.srv.EnableHTTP2 = true
		ps.srv.StartTLS()
	} else {
		ps.srv.Start()
	}
	t.Cleanup(ps.srv.Close)
	return ps
}

// subscribe registers a new browser and returns its subscription JSON.
func (ps *pushService) subscribe(t *testing.T, id string) string {
	b := newBrowser(t)
	ps.mu.Lock()
	ps.browsers["/push/"+id] = b
	ps.mu.Unlock()
	return b.subscription(ps.srv.URL + "/push/" + id)
}

func (ps *pushService) setRespond(fn func(w http.ResponseWriter) bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.respond = fn
}

func (ps *pushService) seen() []delivery {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]delivery(nil), ps.deliveries...)
}

func (ps *pushService) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, format string, args ...any) {
		ps.t.Errorf(format, args...)
		http.Error(w, fmt.Sprintf(format, args...), status)
	}
	ps.mu.Lock()
	b := ps.browsers[r.URL.Path]
	respond := ps.respond
	ps.mu.Unlock()
	if r.Method != http.MethodPost || b == nil {
		fail(http.StatusNotFound, "%s %s: no such subscription", r.Method, r.URL.Path)
		return
	}
	if err := ps.checkVAPID(r); err != nil {
		fail(http.StatusUnauthorized, "VAPID: %v", err)
		return
	}
	for k, v := range map[string]string{"TTL": "86400", "Urgency": "normal", "Topic": "badge",
		"Content-Encoding": "aes128gcm", "Content-Type": "application/octet-stream"} {
		if got := r.Header.Get(k); got != v {
			fail(http.StatusBadRequest, "%s = %q, want %q", k, got, v)
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	if len(body) > 4096 {
		fail(http.StatusRequestEntityTooLarge, "body of %d bytes", len(body))
		return
	}
	plain, err := decrypt(body, b.key, b.auth)
	if err != nil {
		fail(http.StatusBadRequest, "decrypting: %v", err)
		return
	}
	var payload map[string]any
	if err := json.Unmarshal(plain, &payload); err != nil {
		fail(http.StatusBadRequest, "payload %q: %v", plain, err)
		return
	}
	ps.mu.Lock()
	ps.deliveries = append(ps.deliveries, delivery{r.URL.Path, r.Header.Get("Authorization"), payload})
	ps.mu.Unlock()
	if respond != nil && respond(w) {
		return
	}
	w.Header().Set("Location", ps.srv.URL+"/message/1")
	w.WriteHeader(http.StatusCreated)
}

// checkVAPID checks the Authorization header as RFC 8292 says a push
// service does.
func (ps *pushService) checkVAPID(r *http.Request) error {
	m := vapidHeader.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return fmt.Errorf("Authorization %q is not vapid t=..., k=...", r.Header.Get("Authorization"))
	}
	if m[2] != ps.serverKey {
		return errors.New("k is not the application server key of the subscription")
	}
	raw, err := base64.RawURLEncoding.DecodeString(m[2])
	if err != nil {
		return err
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return err
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	origin := scheme + "://" + r.Host
	tok, err := jwt.Parse(m[1], func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(origin), jwt.WithExpirationRequired())
	if err != nil {
		return err
	}
	claims := tok.Claims.(jwt.MapClaims)
	exp, _ := claims.GetExpirationTime()
	if time.Until(exp.Time) > 24*time.Hour {
		return fmt.Errorf("exp %v is more than 24 hours ahead", exp.Time)
	}
	if sub, _ := claims["sub"].(string); sub != testSubject {
		return fmt.Errorf("sub %q, want %q", sub, testSubject)
	}
	if aud, _ := claims["aud"].(string); aud != origin {
		return fmt.Errorf("aud %q, want the origin %q", aud, origin)
	}
	return nil
}

// writeKeys writes a VAPID key pair (base64url, as GenerateVAPIDKeys gives
// it) and returns the file names and the public key.
func writeKeys(t *testing.T) (privFile, pubFile, pub string) {
	t.Helper()
	priv, pub, err := GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privFile, pubFile = testfs.Write(t, dir, "vapid.key", priv+"\n"), filepath.Join(dir, "vapid.pub")
	testfs.WriteFile(t, pubFile, pub+"\n", 0o644)
	return privFile, pubFile, pub
}

func setup(t *testing.T) (*Provider, *pushService) {
	privFile, pubFile, pub := writeKeys(t)
	ps := newPushService(t, pub)
	p, err := New(Config{PrivateKeyFile: privFile, PublicKeyFile: pubFile, Subject: testSubject},
		providers.WithHTTPClient(ps.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if p.PublicKey() != pub {
		t.Fatalf("PublicKey %q, want %q", p.PublicKey(), pub)
	}
	return p, ps
}

func TestSendRoundTrip(t *testing.T) {
	p, ps := setup(t)
	ctx := context.Background()
	alice, bob := ps.subscribe(t, "alice"), ps.subscribe(t, "bob")
	if err := p.Send(ctx, providers.Badge{Tenant: "fabrikam.com", Device: alice, Count: 3,
		BackgroundSync: true, Language: "es-ES", ID: "n-1"}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := p.Send(ctx, providers.Badge{Device: bob, Count: 0}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := ps.seen()
	want := []delivery{
		{path: "/push/alice", payload: map[string]any{"unseenEmailCount": 3.0, "backgroundSyncType": "Email",
			"language": "es-ES", "tenantId": "fabrikam.com", "notificationId": "n-1"}},
		{path: "/push/bob", payload: map[string]any{"unseenEmailCount": 0.0, "backgroundSyncType": "None"}},
	}
	if len(got) != len(want) {
		t.Fatalf("%d deliveries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].path != want[i].path || fmt.Sprint(got[i].payload) != fmt.Sprint(want[i].payload) {
			t.Errorf("delivery %d: %s %v, want %s %v", i, got[i].path, got[i].payload, want[i].path, want[i].payload)
		}
	}
	if got[0].authorization != got[1].authorization {
		t.Error("VAPID token not reused for the same push service")
	}
}

func TestVAPIDTokenRenewal(t *testing.T) {
	p, ps := setup(t)
	now := time.Now()
	var clock sync.Mutex
	p.now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	sub := ps.subscribe(t, "alice")
	send := func() string {
		t.Helper()
		if err := p.Send(context.Background(), providers.Badge{Device: sub, Count: 1}); err != nil {
			t.Fatal(err)
		}
		d := ps.seen()
		return d[len(d)-1].authorization
	}
	first := send()
	clock.Lock()
	now = now.Add(TokenLifetime - tokenRenewBefore - time.Minute)
	clock.Unlock()
	if send() != first {
		t.Error("token renewed while more than an hour was left")
	}
	clock.Lock()
	now = now.Add(2 * time.Minute)
	clock.Unlock()
	// Renewed: exp is now 23 hours ahead of the push service's clock.
	if send() == first {
		t.Error("token not renewed with less than an hour left")
	}
}

func TestStatusMapping(t *testing.T) {
	p, ps := setup(t)
	sub := ps.subscribe(t, "alice")
	tests := []struct {
		status     int
		retryAfter string
		gone       bool
		retryable  bool
		after      time.Duration
	}{
		{status: 200},
		{status: 201},
		{status: 202},
		{status: 400},
		{status: 401},
		{status: 403},
		{status: 404, gone: true},
		{status: 410, gone: true},
		{status: 413},
		{status: 429, retryAfter: "90", retryable: true, after: 90 * time.Second},
		{status: 500, retryable: true},
		{status: 503, retryAfter: "5", retryable: true, after: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			ps.setRespond(func(w http.ResponseWriter) bool {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, `{"code":0,"errno":0,"error":"test",`+"\n"+`"message":"test message"}`)
				return true
			})
			err := p.Send(context.Background(), providers.Badge{Device: sub, Count: 1})
			if tt.status < 300 {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				return
			}
			var e *providers.Error
			if !errors.As(err, &e) || e.Status != tt.status || e.Provider != Name {
				t.Fatalf("error %v, want a *providers.Error with status %d", err, tt.status)
			}
			if providers.IsGone(err) != tt.gone || providers.IsRetryable(err) != tt.retryable {
				t.Errorf("gone=%v retryable=%v, want %v %v", providers.IsGone(err), providers.IsRetryable(err), tt.gone, tt.retryable)
			}
			if after, ok := providers.RetryAfter(err); after != tt.after || ok != (tt.after > 0) {
				t.Errorf("RetryAfter = %v, %v, want %v", after, ok, tt.after)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestInvalidSubscriptionIsGone(t *testing.T) {
	p, ps := setup(t)
	good := newBrowser(t).subscription(ps.srv.URL + "/push/x")
	var s Subscription
	json.Unmarshal([]byte(good), &s)
	with := func(change func(*Subscription)) string {
		c := s
		change(&c)
		data, _ := json.Marshal(c)
		return string(data)
	}
	tests := map[string]string{
		"empty":        "",
		"not JSON":     "abc",
		"http":         with(func(s *Subscription) { s.Endpoint = strings.Replace(s.Endpoint, "https", "http", 1) }),
		"no endpoint":  with(func(s *Subscription) { s.Endpoint = "" }),
		"userinfo":     with(func(s *Subscription) { s.Endpoint = "https://u:p@example.com/x" }),
		"no p256dh":    with(func(s *Subscription) { s.Keys.P256DH = "" }),
		"short p256dh": with(func(s *Subscription) { s.Keys.P256DH = s.Keys.P256DH[:40] }),
		"off curve": with(func(s *Subscription) {
			s.Keys.P256DH = base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...))
		}),
		"short auth": with(func(s *Subscription) { s.Keys.Auth = "AAAA" }),
		"bad auth":   with(func(s *Subscription) { s.Keys.Auth = "!!!!!!!!!!!!!!!!!!!!!!" }),
	}
	for name, device := range tests {
		err := p.Send(context.Background(), providers.Badge{Device: device, Count: 1})
		var e *providers.Error
		if !errors.As(err, &e) || !e.Gone || e.Reason != ReasonInvalidSubscription {
			t.Errorf("%s: error %v, want gone %s", name, err, ReasonInvalidSubscription)
		}
	}
	if _, err := ParseSubscription(good); err != nil {
		t.Errorf("ParseSubscription(good): %v", err)
	}
	if n := len(ps.seen()); n != 0 {
		t.Errorf("%d messages sent", n)
	}
}

func TestService(t *testing.T) {
	p, _ := setup(t)
	tests := []struct {
		name, device, want string
		ok                 bool
	}{
		{"a browser's push service", `{"endpoint":"https://Push.Example.net/wpush/v2/abc","keys":{}}`, "push.example.net", true},
		{"with a port", `{"endpoint":"https://push.example.net:8443/x"}`, "push.example.net:8443", true},
		{"not JSON", "abc", "", false},
		{"no endpoint", `{"keys":{}}`, "", false},
		{"no host", `{"endpoint":"/x"}`, "", false},
		{"not a URL", `{"endpoint":"https://[::1"}`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := p.Service(providers.Badge{Device: tt.device})
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Service: %q %v, want %q %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestPrivateAddressesRefused sends with the default client (the one the
// relay builds, trusting the test push service's CA) to local push
// services: refused unless insecure endpoints are allowed.
func TestPrivateAddressesRefused(t *testing.T) {
	privFile, _, pub := writeKeys(t)
	secure, plain := newPushService(t, pub), startPushService(t, pub, false)
	roots := x509.NewCertPool()
	roots.AddCert(secure.srv.Certificate())
	tests := []struct {
		name      string
		ps        *pushService
		host      string // replaces the endpoint's host when set
		insecure  bool
		wantClass providers.Class // or delivered when wantSent
		wantWhy   string
		wantSent  bool
	}{
		{name: "loopback address", ps: secure, wantClass: providers.AppFault, wantWhy: ReasonEndpointNotPublic},
		{name: "name resolving to loopback", ps: secure, host: "localhost", wantClass: providers.AppFault, wantWhy: ReasonEndpointNotPublic},
		{name: "http endpoint", ps: plain, wantClass: providers.DeviceGone, wantWhy: ReasonInvalidSubscription},
		{name: "loopback address, insecure allowed", ps: secure, insecure: true, wantSent: true},
		{name: "http endpoint, insecure allowed", ps: plain, insecure: true, wantSent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []providers.Option{providers.WithRootCAs(roots)}
			if tt.insecure {
				opts = append(opts, providers.WithInsecureEndpoints())
			}
			p, err := New(Config{PrivateKeyFile: privFile, Subject: testSubject}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			device := tt.ps.subscribe(t, tt.name)
			if tt.host != "" {
				device = strings.Replace(device, "127.0.0.1", tt.host, 1)
			}
			before := len(tt.ps.seen())
			err = p.Send(context.Background(), providers.Badge{Device: device, Count: 1})
			sent := len(tt.ps.seen()) - before
			if tt.wantSent {
				if err != nil || sent != 1 {
					t.Fatalf("error %v, %d messages sent; want delivered", err, sent)
				}
				return
			}
			var e *providers.Error
			if !errors.As(err, &e) || providers.ClassOf(err) != tt.wantClass || e.Reason != tt.wantWhy {
				t.Fatalf("error %v, want %s %q", err, tt.wantClass, tt.wantWhy)
			}
			if sent != 0 {
				t.Errorf("%d messages reached the push service", sent)
			}
		})
	}
}

func TestPublicAddressesOnly(t *testing.T) {
	tests := map[string]bool{
		"142.250.185.10:443": true, "[2a00:1450:4001:82b::200a]:443": true,
		"127.0.0.1:443": false, "[::1]:443": false, "10.1.2.3:443": false, "172.16.0.1:443": false,
		"192.168.1.1:443": false, "169.254.169.254:80": false, "100.64.0.1:443": false,
		"0.0.0.0:443": false, "[fd00::1]:443": false, "[fe80::1]:443": false, "[::ffff:127.0.0.1]:443": false,
		"224.0.0.1:443": false,
	}
	for addr, ok := range tests {
		if err := publicAddressesOnly("tcp", addr, nil); (err == nil) != ok {
			t.Errorf("%s: %v, want allowed=%v", addr, err, ok)
		}
	}
}

func TestAllowedHosts(t *testing.T) {
	privFile, _, _ := writeKeys(t)
	p, err := New(Config{PrivateKeyFile: privFile, Subject: testSubject,
		AllowedHosts: []string{"fcm.googleapis.com", ".push.services.mozilla.com", "*.notify.windows.com"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]bool{
		"fcm.googleapis.com": true, "FCM.googleapis.com": true, "evil-fcm.googleapis.com": false,
		"updates.push.services.mozilla.com": true, "push.services.mozilla.com": true,
		"xpush.services.mozilla.com": false, "wns2-by3p.notify.windows.com": true,
		"notify.windows.com.evil.test": false, "localhost": false,
	}
	for host, want := range tests {
		if got := p.hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
	sub := newBrowser(t).subscription("https://push.example.test/x")
	err = p.Send(context.Background(), providers.Badge{Device: sub, Count: 1})
	var e *providers.Error
	if !errors.As(err, &e) || e.Reason != ReasonEndpointNotAllowed || e.Gone || e.Retryable {
		t.Fatalf("error %v, want permanent %s", err, ReasonEndpointNotAllowed)
	}
}

func TestConfig(t *testing.T) {
	privFile, pubFile, _ := writeKeys(t)
	_, otherPub, _ := writeKeys(t)
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte("secret-looking-content"), 0o600)
	good := Config{PrivateKeyFile: privFile, PublicKeyFile: pubFile, Subject: testSubject}
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"good", func(*Config) {}, ""},
		{"no public key file", func(c *Config) { c.PublicKeyFile = "" }, ""},
		{"https subject", func(c *Config) { c.Subject = "https://pushproxy.example/contact" }, ""},
		{"no private key", func(c *Config) { c.PrivateKeyFile = "" }, "PrivateKeyFile"},
		{"missing private key", func(c *Config) { c.PrivateKeyFile = garbage + ".none" }, "private key"},
		{"bad private key", func(c *Config) { c.PrivateKeyFile = garbage }, "private key"},
		{"bad public key", func(c *Config) { c.PublicKeyFile = garbage }, "public key"},
		{"other public key", func(c *Config) { c.PublicKeyFile = otherPub }, "does not match"},
		{"bare subject", func(c *Config) { c.Subject = "ops@pushproxy.example" }, "Subject"},
		{"urgency", func(c *Config) { c.Urgency = "urgent" }, "Urgency"},
		{"long topic", func(c *Config) { c.Topic = strings.Repeat("a", 33) }, "Topic"},
		{"topic alphabet", func(c *Config) { c.Topic = "badge count" }, "Topic"},
		{"short TTL", func(c *Config) { c.TTL = time.Millisecond }, "TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := New(cfg)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("New: %v, want error containing %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret-looking") {
				t.Errorf("error quotes a key file: %v", err)
			}
		})
	}
}

func FuzzParseSubscription(f *testing.F) {
	f.Add(`{"endpoint":"https://fcm.googleapis.com/fcm/send/abc","keys":{"p256dh":"` + rfcUAPublic + `","auth":"` + rfcAuth + `"}}`)
	f.Add(`{"endpoint":"http://x","keys":{}}`)
	f.Add(`{"endpoint":"https://[::1]:8443/p","keys":{"p256dh":"BA","auth":"AAAAAAAAAAAAAAAAAAAAAA=="}}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, device string) {
		_, sub, err := parseSubscription(device, false)
		if err != nil {
			return
		}
		if sub.endpoint.Scheme != "https" || len(sub.p256dh) != publicKeySize || len(sub.auth) != authSecretSize {
			t.Fatalf("accepted %q", device)
		}
	})
}

func TestAnswers(t *testing.T) {
	providerstest.CheckAnswers(t, answers, []providerstest.Answer{
		{Status: 404, Want: providers.DeviceGone},
		{Status: 410, Want: providers.DeviceGone},
		{Status: 429, Want: providers.Transient},
		{Status: 503, Want: providers.Transient},
		{Status: 401, Want: providers.AppFault},
		{Status: 403, Want: providers.AppFault},
		{Status: 413, Want: providers.AppFault},
		{Status: 400, Want: providers.AppFault},
		{Status: 302, Want: providers.AppFault}, // no row: an app fault
	})
}
