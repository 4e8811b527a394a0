package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/apns/apnstest"
	"github.com/pushproxy/pushproxy/internal/providers/providerstest"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

const (
	testKeyID  = "ABC123DEFG"
	testTeamID = "TEAM123456"
	testTopic  = "org.pushproxy.mail"
	testDevice = "3f9a0c1e2d4b5a6978877665544332211ffeeddccbbaa99887766554433221100"
)

// writeKey writes a fresh P-256 key as a .p8 file and returns its path and
// public part.
func writeKey(t *testing.T) (string, *ecdsa.PublicKey) {
	t.Helper()
	path, pub, err := apnstest.WriteKey(t.TempDir(), testKeyID)
	if err != nil {
		t.Fatal(err)
	}
	return path, pub
}

// pushRequest is what the fake APNs saw in one request that passed its checks.
type pushRequest struct {
	device  string
	bearer  string
	iat     time.Time
	header  http.Header
	payload map[string]any
}

// fakeAPNs is an HTTP/2 TLS server that checks requests the way APNs does
// (provider token signature, kid, iss, iat; headers; payload) and then answers
// with respond.
type fakeAPNs struct {
	t   *testing.T
	pub *ecdsa.PublicKey
	srv *httptest.Server

	mu       sync.Mutex
	requests []pushRequest
	respond  func(w http.ResponseWriter, req pushRequest)
}

func newFakeAPNs(t *testing.T, pub *ecdsa.PublicKey) *fakeAPNs {
	f := &fakeAPNs{t: t, pub: pub, respond: func(w http.ResponseWriter, _ pushRequest) {}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPNs) setRespond(fn func(w http.ResponseWriter, req pushRequest)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.respond = fn
}

func (f *fakeAPNs) seen() []pushRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pushRequest(nil), f.requests...)
}

func reply(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("apns-id", "9f9c0f3e-6a55-4d5b-9b0a-7b3d4f0e2c11")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"reason":%q}`, reason)
}

func (f *fakeAPNs) serve(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		f.t.Errorf("request over %s, want HTTP/2", r.Proto)
	}
	if r.Method != http.MethodPost {
		reply(w, http.StatusMethodNotAllowed, "MethodNotAllowed")
		return
	}
	device, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || device == "" {
		reply(w, http.StatusNotFound, "BadPath")
		return
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("authorization"), "bearer ")
	if !ok {
		reply(w, http.StatusForbidden, "MissingProviderToken")
		return
	}
	iat, err := f.verifyToken(bearer)
	if err != nil {
		f.t.Errorf("provider token: %v", err)
		reply(w, http.StatusForbidden, "InvalidProviderToken")
		return
	}
	if err := checkHeaders(r.Header); err != nil {
		f.t.Errorf("headers: %v", err)
		reply(w, http.StatusBadRequest, "BadRequest")
		return
	}
	body, _ := io.ReadAll(r.Body)
	var payload map[string]any
	if err := json.Unmarshal(body, &payload); err != nil || len(body) > 4096 {
		f.t.Errorf("payload %q: %v", body, err)
		reply(w, http.StatusBadRequest, "PayloadEmpty")
		return
	}
	req := pushRequest{device: device, bearer: bearer, iat: iat, header: r.Header.Clone(), payload: payload}
	f.mu.Lock()
	f.requests = append(f.requests, req)
	respond := f.respond
	f.mu.Unlock()
	respond(w, req)
}

// verifyToken checks the provider token as APNs does and returns its iat.
func (f *fakeAPNs) verifyToken(bearer string) (time.Time, error) {
	tok, err := jwt.Parse(bearer, func(tok *jwt.Token) (any, error) {
		if kid, _ := tok.Header["kid"].(string); kid != testKeyID {
			return nil, fmt.Errorf("kid %q, want %q", kid, testKeyID)
		}
		return f.pub, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(testTeamID))
	if err != nil {
		return time.Time{}, err
	}
	iat, err := tok.Claims.GetIssuedAt()
	if err != nil || iat == nil {
		return time.Time{}, fmt.Errorf("iat: %v", err)
	}
	if age := time.Since(iat.Time); age > time.Hour || age < -time.Minute {
		return time.Time{}, fmt.Errorf("iat %v is not within the last hour", iat.Time)
	}
	return iat.Time, nil
}

func checkHeaders(h http.Header) error {
	want := map[string]string{
		"apns-push-type":   "alert",
		"apns-priority":    "5",
		"apns-topic":       testTopic,
		"apns-collapse-id": "badge",
		"content-type":     "application/json",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			return fmt.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	exp, err := strconv.ParseInt(h.Get("apns-expiration"), 10, 64)
	if err != nil {
		return fmt.Errorf("apns-expiration: %v", err)
	}
	if d := time.Until(time.Unix(exp, 0)); d < 23*time.Hour || d > 25*time.Hour {
		return fmt.Errorf("apns-expiration is %v from now, want about 24h", d)
	}
	return nil
}

func newProvider(t *testing.T, f *fakeAPNs, keyFile string) *Provider {
	t.Helper()
	p, err := New(Config{
		KeyFile: keyFile, KeyID: testKeyID, TeamID: testTeamID, Topic: testTopic,
		Host: f.srv.URL,
	}, providers.WithHTTPClient(f.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func setup(t *testing.T) (*Provider, *fakeAPNs) {
	keyFile, pub := writeKey(t)
	f := newFakeAPNs(t, pub)
	return newProvider(t, f, keyFile), f
}

func TestSendPayloadAndHeaders(t *testing.T) {
	p, f := setup(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		badge providers.Badge
		want  string
	}{
		{"badge", providers.Badge{Device: testDevice, Count: 3, ID: "B3F1C0DE-0000-4000-8000-000000000001"}, `{"aps":{"badge":3}}`},
		{"background sync", providers.Badge{Device: testDevice, Count: 7, BackgroundSync: true}, `{"aps":{"badge":7,"content-available":1}}`},
		{"zero clears", providers.Badge{Device: testDevice, Count: 0}, `{"aps":{"badge":0}}`},
		{"negative clamps", providers.Badge{Device: testDevice, Count: -2}, `{"aps":{"badge":0}}`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.Send(ctx, tt.badge); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := f.seen()[i]
			var want map[string]any
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if g, w := fmt.Sprint(got.payload), fmt.Sprint(want); g != w {
				t.Errorf("payload %s, want %s", g, w)
			}
			if got.device != testDevice {
				t.Errorf("device %q", got.device)
			}
			wantID := strings.ToLower(tt.badge.ID)
			if id := got.header.Get("apns-id"); id != wantID {
				t.Errorf("apns-id %q, want %q", id, wantID)
			}
		})
	}
	// The provider token is reused between pushes.
	reqs := f.seen()
	for _, r := range reqs[1:] {
		if r.bearer != reqs[0].bearer {
			t.Fatal("provider token changed between pushes")
		}
	}
}

func TestStatusMapping(t *testing.T) {
	p, f := setup(t)
	goneAt := time.UnixMilli(1700000000000)
	tests := []struct {
		name       string
		status     int
		body       string
		retryAfter string
		wantErr    bool
		gone       bool
		retryable  bool
		after      time.Duration
		reason     string
	}{
		{name: "ok", status: 200},
		{name: "unregistered", status: 410, body: `{"reason":"Unregistered","timestamp":1700000000000}`,
			wantErr: true, gone: true, reason: "Unregistered"},
		{name: "expired device token", status: 410, body: `{"reason":"ExpiredToken"}`,
			wantErr: true, gone: true, reason: "ExpiredToken"},
		{name: "bad device token", status: 400, body: `{"reason":"BadDeviceToken"}`,
			wantErr: true, gone: true, reason: "BadDeviceToken"},
		{name: "not for topic", status: 400, body: `{"reason":"DeviceTokenNotForTopic"}`,
			wantErr: true, reason: "DeviceTokenNotForTopic"},
		{name: "bad collapse id", status: 400, body: `{"reason":"BadCollapseId"}`,
			wantErr: true, reason: "BadCollapseId"},
		{name: "invalid provider token", status: 403, body: `{"reason":"InvalidProviderToken"}`,
			wantErr: true, reason: "InvalidProviderToken"},
		{name: "too large", status: 413, body: `{"reason":"PayloadTooLarge"}`,
			wantErr: true, reason: "PayloadTooLarge"},
		{name: "too many requests", status: 429, body: `{"reason":"TooManyRequests"}`, retryAfter: "30",
			wantErr: true, retryable: true, after: 30 * time.Second, reason: "TooManyRequests"},
		{name: "internal error", status: 500, body: `{"reason":"InternalServerError"}`,
			wantErr: true, retryable: true, reason: "InternalServerError"},
		{name: "unavailable, not JSON", status: 503, body: "<html>down</html>",
			retryAfter: time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat),
			wantErr:    true, retryable: true, after: 2 * time.Minute, reason: "Service Unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.setRespond(func(w http.ResponseWriter, _ pushRequest) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			err := p.Send(context.Background(), providers.Badge{Device: testDevice, Count: 1})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Send error %v, want error %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			var e *providers.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *providers.Error", err)
			}
			if e.Provider != Name || e.Status != tt.status || e.Reason != tt.reason {
				t.Errorf("error %+v, want status %d reason %q", e, tt.status, tt.reason)
			}
			if providers.IsGone(err) != tt.gone || providers.IsRetryable(err) != tt.retryable {
				t.Errorf("gone=%v retryable=%v, want %v %v", providers.IsGone(err), providers.IsRetryable(err), tt.gone, tt.retryable)
			}
			after, ok := providers.RetryAfter(err)
			if ok != (tt.after > 0) || after > tt.after || after < tt.after-5*time.Second {
				t.Errorf("RetryAfter %v %v, want about %v", after, ok, tt.after)
			}
			if tt.name == "unregistered" && !e.GoneSince.Equal(goneAt) {
				t.Errorf("GoneSince %v, want %v", e.GoneSince, goneAt)
			}
		})
	}
}

func TestExpiredProviderTokenIsRenewedOnce(t *testing.T) {
	p, f := setup(t)
	first := p.token.GenerateIfExpired()
	f.setRespond(func(w http.ResponseWriter, req pushRequest) {
		if req.bearer == first {
			reply(w, http.StatusForbidden, "ExpiredProviderToken")
		}
	})
	// Concurrent senders all hit the expired token; only one renews it.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- p.Send(context.Background(), providers.Badge{Device: testDevice, Count: 2}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Send: %v", err)
		}
	}
	bearers := map[string]bool{}
	for _, r := range f.seen() {
		bearers[r.bearer] = true
	}
	if len(bearers) != 2 || !bearers[first] {
		t.Errorf("saw %d distinct provider tokens, want the expired one and one renewal", len(bearers))
	}
}

func TestExpiredProviderTokenTwiceIsPermanent(t *testing.T) {
	p, f := setup(t)
	f.setRespond(func(w http.ResponseWriter, _ pushRequest) {
		reply(w, http.StatusForbidden, "ExpiredProviderToken")
	})
	err := p.Send(context.Background(), providers.Badge{Device: testDevice, Count: 2})
	if err == nil || providers.IsGone(err) || providers.IsRetryable(err) {
		t.Fatalf("Send error %v, want a permanent error", err)
	}
	if n := len(f.seen()); n != 2 {
		t.Errorf("%d requests, want 2 (one retry)", n)
	}
}

func TestProviderTokenRefreshedAfter50Minutes(t *testing.T) {
	p, f := setup(t)
	ctx := context.Background()
	if err := p.Send(ctx, providers.Badge{Device: testDevice, Count: 1}); err != nil {
		t.Fatal(err)
	}
	// Age the token past apns2's TokenTimeout (50 minutes).
	p.token.Lock()
	p.token.IssuedAt -= 51 * 60
	p.token.Unlock()
	if err := p.Send(ctx, providers.Badge{Device: testDevice, Count: 2}); err != nil {
		t.Fatal(err)
	}
	reqs := f.seen()
	if reqs[0].bearer == reqs[1].bearer {
		t.Error("provider token was not renewed after 51 minutes")
	}
}

func TestInvalidDeviceTokenIsGoneWithoutRequest(t *testing.T) {
	p, f := setup(t)
	for _, device := range []string{"", "../../admin", "abc xyz", strings.Repeat("a", 201)} {
		err := p.Send(context.Background(), providers.Badge{Device: device, Count: 1})
		if !providers.IsGone(err) {
			t.Errorf("device %q: error %v, want gone", device, err)
		}
	}
	if n := len(f.seen()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestNetworkErrorIsRetryable(t *testing.T) {
	p, f := setup(t)
	f.srv.Close()
	err := p.Send(context.Background(), providers.Badge{Device: testDevice, Count: 1})
	if !providers.IsRetryable(err) {
		t.Fatalf("error %v, want retryable", err)
	}
}

func TestConfig(t *testing.T) {
	keyFile, _ := writeKey(t)
	notKey := testfs.Write(t, t.TempDir(), "bad.p8", "not a key")
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(p384)
	p384File := filepath.Join(t.TempDir(), "p384.p8")
	if err := os.WriteFile(p384File, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	good := Config{KeyFile: keyFile, KeyID: testKeyID, TeamID: testTeamID, Topic: testTopic, Environment: Sandbox}
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"sandbox", func(*Config) {}, ""},
		{"production", func(c *Config) { c.Environment = Production }, ""},
		{"host without environment", func(c *Config) { c.Environment, c.Host = "", "https://localhost:2197" }, ""},
		{"no environment", func(c *Config) { c.Environment = "" }, "Environment"},
		{"http host", func(c *Config) { c.Host = "http://localhost" }, "Host"},
		{"no key", func(c *Config) { c.KeyFile = "" }, "KeyFile"},
		{"missing key file", func(c *Config) { c.KeyFile = filepath.Join(t.TempDir(), "none.p8") }, "loading"},
		{"not a key", func(c *Config) { c.KeyFile = notKey }, "loading"},
		{"P-384 key", func(c *Config) { c.KeyFile = p384File }, "P-256"},
		{"no key id", func(c *Config) { c.KeyID = "" }, "KeyID"},
		{"no team", func(c *Config) { c.TeamID = "" }, "TeamID"},
		{"no topic", func(c *Config) { c.Topic = "" }, "Topic"},
		{"priority 10", func(c *Config) { c.Priority = 10 }, ""},
		{"priority 7", func(c *Config) { c.Priority = 7 }, "Priority"},
		{"negative TTL", func(c *Config) { c.TTL = -time.Second }, "TTL"},
		{"long collapse id", func(c *Config) { c.CollapseID = strings.Repeat("x", 65) }, "CollapseID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := New(cfg)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("New: %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAnswers(t *testing.T) {
	providerstest.CheckAnswers(t, answers, []providerstest.Answer{
		{Status: 410, Reason: "Unregistered", Want: providers.DeviceGone},
		{Status: 410, Reason: "ExpiredToken", Want: providers.DeviceGone},
		{Status: 400, Reason: "BadDeviceToken", Want: providers.DeviceGone},
		{Status: 400, Reason: "DeviceTokenNotForTopic", Want: providers.AppFault},
		{Status: 403, Reason: "InvalidProviderToken", Want: providers.AppFault},
		{Status: 403, Reason: "ExpiredProviderToken", Want: providers.AppFault},
		{Status: 403, Reason: "BadCertificateEnvironment", Want: providers.AppFault},
		{Status: 429, Reason: "TooManyProviderTokenUpdates", Want: providers.Transient},
		{Status: 429, Reason: "TooManyRequests", Want: providers.Transient},
		{Status: 500, Reason: "InternalServerError", Want: providers.Transient},
		{Status: 503, Reason: "Shutdown", Want: providers.Transient},
		{Status: 400, Reason: "BadTopic", Want: providers.AppFault},
		{Status: 404, Reason: "BadPath", Want: providers.AppFault},
		{Status: 413, Reason: "PayloadTooLarge", Want: providers.AppFault},
		{Status: 302, Reason: "Strange", Want: providers.AppFault}, // no row: an app fault
	})
}
