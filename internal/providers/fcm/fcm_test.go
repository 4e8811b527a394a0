package fcm

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
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
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/providerstest"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

const (
	testProject = "pushproxy-test"
	testEmail   = "relay@pushproxy-test.iam.gserviceaccount.com"
	testKeyID   = "0123456789abcdef0123456789abcdef01234567"
	testDevice  = "fcm-registration-token:APA91bH"
)

// testKey is one RSA key for all tests: generating one is slow under -race.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// fakeFCM serves an OAuth 2.0 token endpoint (JWT bearer grant) and the FCM
// v1 send endpoint, checking both the way Google does.
type fakeFCM struct {
	t   *testing.T
	srv *httptest.Server

	mu            sync.Mutex
	tokenRequests int
	valid         map[string]bool // access tokens issued and not revoked
	messages      []map[string]any
	tokenReply    func(w http.ResponseWriter) bool // answers instead of issuing a token if it returns true
	respond       func(w http.ResponseWriter)
}

func newFakeFCM(t *testing.T) *fakeFCM {
	f := &fakeFCM{t: t, valid: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", f.send)
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

// counts returns the token requests and messages seen so far.
func (f *fakeFCM) counts() (tokenRequests int, messages []map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenRequests, append([]map[string]any(nil), f.messages...)
}

func (f *fakeFCM) tokenURL() string { return f.srv.URL + "/token" }

func (f *fakeFCM) set(fn func(f *fakeFCM)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// token checks the JWT bearer grant assertion (RFC 7523) and issues a token.
func (f *fakeFCM) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		f.t.Errorf("grant_type %q", g)
	}
	tok, err := jwt.Parse(r.PostForm.Get("assertion"), func(tok *jwt.Token) (any, error) {
		if kid, _ := tok.Header["kid"].(string); kid != testKeyID {
			return nil, fmt.Errorf("kid %q", kid)
		}
		return &testKey().PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(testEmail),
		jwt.WithAudience(f.tokenURL()), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		f.t.Errorf("assertion: %v", err)
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	claims := tok.Claims.(jwt.MapClaims)
	if scope, _ := claims["scope"].(string); scope != Scope {
		f.t.Errorf("scope %q", scope)
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if iat == nil || exp.Sub(iat.Time) > time.Hour {
		f.t.Errorf("assertion lifetime over an hour")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tokenReply != nil && f.tokenReply(w) {
		return
	}
	f.tokenRequests++
	access := fmt.Sprintf("ya29.test-%d", f.tokenRequests)
	f.valid[access] = true
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, access)
}

func errorBody(code int, status, fcmCode string) string {
	details := ""
	if fcmCode != "" {
		details = fmt.Sprintf(`,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":%q}]`, fcmCode)
	}
	return fmt.Sprintf(`{"error":{"code":%d,"message":"test error","status":%q%s}}`, code, status, details)
}

func (f *fakeFCM) send(w http.ResponseWriter, r *http.Request) {
	if p := r.PathValue("project"); p != testProject {
		f.t.Errorf("project %q", p)
	}
	access, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	ok := f.valid[access]
	respond := f.respond
	f.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, errorBody(401, "UNAUTHENTICATED", ""))
		return
	}
	var body struct {
		Message map[string]any `json:"message"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Message == nil {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, errorBody(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"))
		return
	}
	f.mu.Lock()
	f.messages = append(f.messages, body.Message)
	f.mu.Unlock()
	if respond != nil {
		respond(w)
		return
	}
	fmt.Fprintf(w, `{"name":"projects/%s/messages/0:1700000000000000%%abc"}`, testProject)
}

func writeCredentials(t *testing.T, tokenURI string) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(testKey())
	if err != nil {
		t.Fatal(err)
	}
	sa := map[string]string{
		"type":           "service_account",
		"project_id":     testProject,
		"private_key_id": testKeyID,
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   testEmail,
		"client_id":      "1234567890",
		"token_uri":      tokenURI,
	}
	data, _ := json.Marshal(sa)
	return testfs.Write(t, t.TempDir(), "service-account.json", string(data))
}

func setup(t *testing.T) (*Provider, *fakeFCM) {
	f := newFakeFCM(t)
	p, err := New(Config{
		CredentialsFile: writeCredentials(t, f.tokenURL()),
		BaseURL:         f.srv.URL,
	}, providers.WithHTTPClient(f.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, f
}

func TestSendMessage(t *testing.T) {
	p, f := setup(t)
	ctx := context.Background()
	b := providers.Badge{Tenant: "fabrikam.com", AppID: "app", Device: testDevice, Count: 3,
		BackgroundSync: true, Language: "es-ES", ID: "n-1"}
	if err := p.Send(ctx, b); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := p.Send(ctx, providers.Badge{Device: testDevice, Count: -1}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	want := []map[string]any{
		{
			"token": testDevice,
			"data": map[string]any{"unseenEmailCount": "3", "backgroundSyncType": "Email",
				"language": "es-ES", "tenantId": "fabrikam.com", "notificationId": "n-1"},
			"android": map[string]any{"collapseKey": "badge", "priority": "NORMAL", "ttl": "86400s"},
		},
		{
			"token":   testDevice,
			"data":    map[string]any{"unseenEmailCount": "0", "backgroundSyncType": "None"},
			"android": map[string]any{"collapseKey": "badge", "priority": "NORMAL", "ttl": "86400s"},
		},
	}
	tokenRequests, messages := f.counts()
	if !reflect.DeepEqual(messages, want) {
		t.Errorf("messages\n%v\nwant\n%v", messages, want)
	}
	if tokenRequests != 1 {
		t.Errorf("%d token requests, want 1 (the token is reused)", tokenRequests)
	}
}

func TestStatusMapping(t *testing.T) {
	p, f := setup(t)
	tests := []struct {
		name       string
		status     int
		body       string
		retryAfter string
		gone       bool
		retryable  bool
		after      time.Duration
		reason     string
	}{
		{name: "unregistered", status: 404, body: errorBody(404, "NOT_FOUND", "UNREGISTERED"),
			gone: true, reason: "UNREGISTERED"},
		{name: "404 without details", status: 404, body: "Not Found",
			gone: true, reason: "Not Found"},
		{name: "invalid argument", status: 400, body: errorBody(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
			reason: "INVALID_ARGUMENT"},
		{name: "sender id mismatch", status: 403, body: errorBody(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
			reason: "SENDER_ID_MISMATCH"},
		{name: "third party auth", status: 401, body: errorBody(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
			reason: "THIRD_PARTY_AUTH_ERROR"},
		{name: "quota, short retry-after", status: 429, body: errorBody(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
			retryAfter: "10", retryable: true, after: time.Minute, reason: "QUOTA_EXCEEDED"},
		{name: "quota, long retry-after", status: 429, body: errorBody(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
			retryAfter: "120", retryable: true, after: 2 * time.Minute, reason: "QUOTA_EXCEEDED"},
		{name: "quota, no retry-after", status: 429, body: errorBody(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
			retryable: true, after: time.Minute, reason: "QUOTA_EXCEEDED"},
		{name: "unavailable", status: 503, body: errorBody(503, "UNAVAILABLE", "UNAVAILABLE"),
			retryAfter: "30", retryable: true, after: 30 * time.Second, reason: "UNAVAILABLE"},
		{name: "internal", status: 500, body: errorBody(500, "INTERNAL", "INTERNAL"),
			retryable: true, reason: "INTERNAL"},
		{name: "bad gateway html", status: 502, body: "<html>bad gateway</html>",
			retryable: true, reason: "Bad Gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.set(func(f *fakeFCM) {
				f.respond = func(w http.ResponseWriter) {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					w.WriteHeader(tt.status)
					io.WriteString(w, tt.body)
				}
			})
			err := p.Send(context.Background(), providers.Badge{Device: testDevice, Count: 1})
			var e *providers.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *providers.Error", err, err)
			}
			if e.Provider != Name || e.Status != tt.status || e.Reason != tt.reason {
				t.Errorf("error %+v, want status %d reason %q", e, tt.status, tt.reason)
			}
			if providers.IsGone(err) != tt.gone || providers.IsRetryable(err) != tt.retryable {
				t.Errorf("gone=%v retryable=%v, want %v %v", providers.IsGone(err), providers.IsRetryable(err), tt.gone, tt.retryable)
			}
			if after, ok := providers.RetryAfter(err); after != tt.after || ok != (tt.after > 0) {
				t.Errorf("RetryAfter = %v, %v, want %v", after, ok, tt.after)
			}
		})
	}
	if n, _ := f.counts(); n != 1 {
		t.Errorf("%d token requests, want 1: THIRD_PARTY_AUTH_ERROR must not renew the access token", n)
	}
}

func TestRejectedAccessTokenIsRenewedOnce(t *testing.T) {
	p, f := setup(t)
	ctx := context.Background()
	if err := p.Send(ctx, providers.Badge{Device: testDevice, Count: 1}); err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeFCM) { clear(f.valid) }) // revoke
	if err := p.Send(ctx, providers.Badge{Device: testDevice, Count: 2}); err != nil {
		t.Fatalf("Send after revocation: %v", err)
	}
	if n, messages := f.counts(); n != 2 || len(messages) != 2 {
		t.Errorf("%d token requests and %d messages, want 2 and 2", n, len(messages))
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		retryable bool
	}{
		{"invalid grant", http.StatusBadRequest, false},
		{"unauthorized client", http.StatusUnauthorized, false},
		{"unavailable", http.StatusServiceUnavailable, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, f := setup(t)
			f.set(func(f *fakeFCM) {
				f.tokenReply = func(w http.ResponseWriter) bool {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tt.status)
					io.WriteString(w, `{"error":"invalid_grant","error_description":"test"}`)
					return true
				}
			})
			err := p.Send(context.Background(), providers.Badge{Device: testDevice, Count: 1})
			if err == nil || providers.IsGone(err) || providers.IsRetryable(err) != tt.retryable {
				t.Fatalf("error %v, want retryable=%v", err, tt.retryable)
			}
			if appFault := errors.Is(err, providers.ErrAppFault); appFault == tt.retryable {
				t.Fatalf("error %v: app fault %v, want %v", err, appFault, !tt.retryable)
			}
			if _, messages := f.counts(); len(messages) != 0 {
				t.Error("message sent without an access token")
			}
		})
	}
}

func TestEmptyDeviceIsGone(t *testing.T) {
	p, _ := setup(t)
	if err := p.Send(context.Background(), providers.Badge{Count: 1}); !providers.IsGone(err) {
		t.Fatalf("error %v, want gone", err)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	good := writeCredentials(t, "https://oauth2.example.test/token")
	notJSON := testfs.Write(t, dir, "not.json", "secret-looking-content")
	notSA := testfs.Write(t, dir, "user.json", `{"type":"authorized_user","client_id":"x"}`)
	badKey := testfs.Write(t, dir, "badkey.json", `{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n","project_id":"p"}`)
	noProject := testfs.Write(t, dir, "noproject.json", strings.Replace(string(must(os.ReadFile(good))), `"project_id":"`+testProject, `"project_id":"`, 1))

	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"good", Config{CredentialsFile: good}, ""},
		{"high priority", Config{CredentialsFile: good, Priority: "HIGH"}, ""},
		{"no file", Config{}, "CredentialsFile"},
		{"missing file", Config{CredentialsFile: filepath.Join(dir, "none.json")}, "loading"},
		{"not JSON", Config{CredentialsFile: notJSON}, "not a JSON"},
		{"not a service account", Config{CredentialsFile: notSA}, "not a service account"},
		{"bad key", Config{CredentialsFile: badKey}, "private_key"},
		{"no project", Config{CredentialsFile: noProject}, "ProjectID"},
		{"project from config", Config{CredentialsFile: noProject, ProjectID: "p"}, ""},
		{"http token url", Config{CredentialsFile: good, TokenURL: "http://localhost/token"}, "token URL"},
		{"http base url", Config{CredentialsFile: good, BaseURL: "http://localhost"}, "BaseURL"},
		{"bad priority", Config{CredentialsFile: good, Priority: "urgent"}, "Priority"},
		{"long TTL", Config{CredentialsFile: good, TTL: 30 * 24 * time.Hour}, "TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("New: %v, want error containing %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret-looking") {
				t.Errorf("error quotes the credentials file: %v", err)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestAnswers(t *testing.T) {
	providerstest.CheckAnswers(t, answers, []providerstest.Answer{
		{Status: 404, Reason: "UNREGISTERED", Want: providers.DeviceGone},
		{Status: 404, Reason: "Not Found", Want: providers.DeviceGone},
		{Status: 429, Reason: "QUOTA_EXCEEDED", Want: providers.Transient, Least: QuotaRetryAfter},
		{Status: 429, Reason: "RESOURCE_EXHAUSTED", Want: providers.Transient, Least: QuotaRetryAfter},
		{Status: 503, Reason: "UNAVAILABLE", Want: providers.Transient},
		{Status: 500, Reason: "INTERNAL", Want: providers.Transient},
		{Status: 502, Reason: "Bad Gateway", Want: providers.Transient},
		{Status: 401, Reason: "THIRD_PARTY_AUTH_ERROR", Want: providers.AppFault},
		{Status: 401, Reason: "UNAUTHENTICATED", Want: providers.AppFault},
		{Status: 403, Reason: "PERMISSION_DENIED", Want: providers.AppFault},
		{Status: 403, Reason: "SENDER_ID_MISMATCH", Want: providers.AppFault},
		{Status: 400, Reason: "INVALID_ARGUMENT", Want: providers.AppFault},
		{Status: 302, Reason: "Found", Want: providers.AppFault}, // no row: an app fault
	})
}

func TestTokenAnswers(t *testing.T) {
	providerstest.CheckAnswers(t, tokenAnswers, []providerstest.Answer{
		{Status: 429, Reason: "rate_limited", Want: providers.Transient},
		{Status: 503, Want: providers.Transient},
		{Status: 400, Reason: "invalid_grant", Want: providers.AppFault},
		{Status: 401, Reason: "unauthorized_client", Want: providers.AppFault},
	})
}
