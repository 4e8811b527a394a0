package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushproxy/pushproxy/internal/testfs"
)

const (
	appTenant = "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f"
	appClient = "2f6c1e4a-9b7d-4c3e-8a1f-5d6e7f8a9b0c"
)

// checkAssertion verifies a client assertion as Entra would: RS256 signed
// by cert, x5t naming cert, aud the endpoint, iss and sub the client, a
// jti, and at most AssertionLifetime from nbf to exp around now.
func checkAssertion(assertion string, cert *Certificate, endpoint string, now time.Time) error {
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		if t.Header["x5t"] != cert.X5T() {
			return nil, fmt.Errorf("x5t %v names another certificate", t.Header["x5t"])
		}
		return &cert.Key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(endpoint), jwt.WithIssuer(appClient),
		jwt.WithSubject(appClient), jwt.WithTimeFunc(func() time.Time { return now }), jwt.WithIssuedAt(), jwt.WithExpirationRequired())
	if err != nil {
		return err
	}
	if tok.Header["typ"] != "JWT" {
		return fmt.Errorf("typ %v", tok.Header["typ"])
	}
	if jti, _ := claims["jti"].(string); jti == "" {
		return errors.New("no jti")
	}
	nbf, _ := claims.GetNotBefore()
	exp, _ := claims.GetExpirationTime()
	if nbf == nil || exp.Sub(nbf.Time) != AssertionLifetime {
		return fmt.Errorf("validity %v..%v", nbf, exp)
	}
	return nil
}

func TestClientAssertion(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	if cert.X5T() != s2sX5T {
		t.Fatalf("x5t %s, want %s", cert.X5T(), s2sX5T)
	}
	endpoint := "https://login.example/" + appTenant + "/oauth2/v2.0/token"
	a, err := ClientAssertion(cert, appClient, endpoint, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkAssertion(a, cert, endpoint, testNow.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	b, err := ClientAssertion(cert, appClient, endpoint, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two assertions share their jti")
	}
}

func TestClientAssertionRefuses(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	public := &Certificate{X509: cert.X509}
	tests := []struct {
		name string
		cert *Certificate
		now  time.Time
		want error
	}{
		{"no private key", public, testNow, ErrNoPrivateKey},
		{"no certificate", nil, testNow, ErrNoPrivateKey},
		{"before the certificate", cert, cert.X509.NotBefore.Add(-time.Hour), ErrCertificateExpired},
		{"after the certificate", cert, cert.X509.NotAfter.Add(time.Hour), ErrCertificateExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ClientAssertion(tt.cert, appClient, "https://login.example/t/oauth2/v2.0/token", tt.now); !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

// tokenEndpoint is a fake Entra token endpoint. It checks the client
// credentials grant (a client assertion signed by cert, or the secret)
// and answers with the next token.
type tokenEndpoint struct {
	t        *testing.T
	cert     *Certificate
	secret   string
	clock    *fakeClock
	requests atomic.Int32
	// hold, when set, is waited on before answering.
	hold chan struct{}
	// arrived receives a value as each request arrives, when set.
	arrived chan struct{}
	srv     *httptest.Server
}

func newTokenEndpoint(t *testing.T, cert *Certificate, secret string, clock *fakeClock) *tokenEndpoint {
	e := &tokenEndpoint{t: t, cert: cert, secret: secret, clock: clock}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *tokenEndpoint) url() string { return e.srv.URL + "/" + appTenant + "/oauth2/v2.0/token" }

func (e *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	n := e.requests.Add(1)
	if e.arrived != nil {
		e.arrived <- struct{}{}
	}
	if e.hold != nil {
		<-e.hold
	}
	w.Header().Set("Content-Type", "application/json")
	fail := func(code, desc string) {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": code, "error_description": desc, "error_codes": []int{7000215}, "correlation_id": "c0ffee"})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/"+appTenant+"/oauth2/v2.0/token" || r.ParseForm() != nil {
		fail("invalid_request", "bad request")
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" || f.Get("client_id") != appClient || f.Get("scope") != GraphScope {
		fail("invalid_request", fmt.Sprintf("form %v", f))
		return
	}
	if e.cert != nil {
		if f.Get("client_assertion_type") != ClientAssertionType || f.Has("client_secret") {
			fail("invalid_client", "no assertion")
			return
		}
		if err := checkAssertion(f.Get("client_assertion"), e.cert, e.url(), e.clock.Now()); err != nil {
			fail("invalid_client", "AADSTS700027: "+err.Error())
			return
		}
	} else if f.Get("client_secret") != e.secret || f.Has("client_assertion") {
		fail("invalid_client", "AADSTS7000215: Invalid client secret provided.")
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": fmt.Sprintf("token-%d", n)})
}

func newTestAppTokens(t *testing.T, e *tokenEndpoint, mutate func(*AppTokenOptions)) *AppTokenSource {
	t.Helper()
	opts := AppTokenOptions{Authority: e.srv.URL + "/", TenantID: appTenant, ClientID: appClient, Certificate: e.cert, Secret: e.secret,
		Scope: GraphScope, Client: e.srv.Client(), Now: e.clock.Now}
	if mutate != nil {
		mutate(&opts)
	}
	s, err := NewAppTokenSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAppTokenSourceCachesAndRenews(t *testing.T) {
	clock := newFakeClock(testNow)
	for _, tt := range []struct {
		name   string
		cert   *Certificate
		secret string
	}{
		{"certificate", loadTestCert(t, "s2s"), ""},
		{"secret", nil, "s3cret~value"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock.Set(testNow)
			e := newTokenEndpoint(t, tt.cert, tt.secret, clock)
			s := newTestAppTokens(t, e, nil)
			if s.Endpoint() != e.url() {
				t.Fatalf("endpoint %s, want %s", s.Endpoint(), e.url())
			}
			ctx := context.Background()
			steps := []struct {
				advance time.Duration
				forget  bool
				want    string
			}{
				{0, false, "token-1"},
				{time.Minute, false, "token-1"},
				{53 * time.Minute, false, "token-1"}, // 54 min: still 5 min before expiry
				{time.Minute, false, "token-2"},      // 55 min: renewed
				{0, true, "token-3"},                 // refused by the resource: forgotten
			}
			for i, step := range steps {
				clock.Advance(step.advance)
				if step.forget {
					s.Forget("token-2")
					s.Forget("some-older-token") // not the cached one: no effect
				}
				got, err := s.Token(ctx)
				if err != nil || got != step.want {
					t.Fatalf("step %d: token %q, %v; want %q", i, got, err, step.want)
				}
			}
		})
	}
}

func TestAppTokenSourceRefreshesOnceAtATime(t *testing.T) {
	clock := newFakeClock(testNow)
	e := newTokenEndpoint(t, nil, "s3cret", clock)
	e.hold, e.arrived = make(chan struct{}), make(chan struct{}, 8)
	s := newTestAppTokens(t, e, nil)
	var wg sync.WaitGroup
	got := make([]string, 5)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := s.Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			got[i] = tok
		}()
	}
	<-e.arrived
	// A caller that gives up while another refreshes gets its ctx's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Token(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller: %v", err)
	}
	close(e.hold)
	wg.Wait()
	if n := e.requests.Load(); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	for i, tok := range got {
		if tok != "token-1" {
			t.Fatalf("caller %d got %q", i, tok)
		}
	}
}

func TestAppTokenSourceErrors(t *testing.T) {
	clock := newFakeClock(testNow)
	cert, other := loadTestCert(t, "s2s"), loadTestCert(t, "contoso")
	tests := []struct {
		name     string
		endpoint *tokenEndpoint
		mutate   func(*AppTokenOptions)
		code     string
		contains string
	}{
		{"wrong secret", newTokenEndpoint(t, nil, "right", clock), func(o *AppTokenOptions) { o.Secret = "wrong" }, "invalid_client", "AADSTS7000215"},
		{"assertion signed by another certificate", newTokenEndpoint(t, cert, "", clock), func(o *AppTokenOptions) { o.Certificate = other }, "invalid_client", "AADSTS700027"},
		{"other tenant", newTokenEndpoint(t, cert, "", clock), func(o *AppTokenOptions) { o.TenantID = "contoso.onmicrosoft.com" }, "invalid_request", "bad request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newTestAppTokens(t, tt.endpoint, tt.mutate).Token(context.Background())
			var te *TokenError
			if !errors.As(err, &te) || te.Code != tt.code || te.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("error %v, want a %s TokenError", err, tt.code)
			}
		})
	}
}

func TestNewAppTokenSourceChecksOptions(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	good := AppTokenOptions{TenantID: appTenant, ClientID: appClient, Certificate: cert, Scope: EWSScope}
	tests := []struct {
		name   string
		mutate func(*AppTokenOptions)
	}{
		{"no tenant", func(o *AppTokenOptions) { o.TenantID = "" }},
		{"tenant with a slash", func(o *AppTokenOptions) { o.TenantID = "a/b" }},
		{"no client", func(o *AppTokenOptions) { o.ClientID = "" }},
		{"no scope", func(o *AppTokenOptions) { o.Scope = " " }},
		{"no credential", func(o *AppTokenOptions) { o.Certificate = nil }},
		{"certificate without key", func(o *AppTokenOptions) { o.Certificate = &Certificate{X509: cert.X509} }},
		{"relative authority", func(o *AppTokenOptions) { o.Authority = "login.example" }},
		{"authority with a query", func(o *AppTokenOptions) { o.Authority = "https://login.example/?x=1" }},
	}
	if _, err := NewAppTokenSource(good); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := good
			tt.mutate(&opts)
			if _, err := NewAppTokenSource(opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestParseTokenResponse(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		token    string
		lifetime time.Duration
		code     string // a TokenError's code; "-" for another error
	}{
		{"bearer", 200, `{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0.eyJ1.c2ln"}`, "eyJ0.eyJ1.c2ln", 3599 * time.Second, ""},
		{"v1 strings", 200, `{"token_type":"bearer","expires_in":"3600","access_token":"a"}`, "a", time.Hour, ""},
		{"no lifetime", 200, `{"access_token":"a"}`, "a", 0, ""},
		{"no token", 200, `{"token_type":"Bearer","expires_in":3599}`, "", 0, "-"},
		{"token with a space", 200, `{"access_token":"a b"}`, "", 0, "-"},
		{"token with a newline", 200, `{"access_token":"a\r\nX-Evil: 1"}`, "", 0, "-"},
		{"other type", 200, `{"token_type":"MAC","access_token":"a"}`, "", 0, "-"},
		{"negative lifetime", 200, `{"access_token":"a","expires_in":-5}`, "", 0, "-"},
		{"fractional lifetime", 200, `{"access_token":"a","expires_in":1.5}`, "", 0, "-"},
		{"not JSON", 200, `<html>`, "", 0, "-"},
		{"entra error", 400, `{"error":"invalid_scope","error_description":"AADSTS70011: bad scope","error_codes":[70011],"correlation_id":"c1"}`, "", 0, "invalid_scope"},
		{"html error", 502, "<html>Bad\ngateway</html>", "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, lifetime, err := ParseTokenResponse(tt.status, []byte(tt.body))
			var te *TokenError
			switch {
			case tt.token != "":
				if err != nil || token != tt.token || lifetime != tt.lifetime {
					t.Fatalf("got %q %v %v", token, lifetime, err)
				}
			case tt.code == "-":
				if err == nil || errors.As(err, &te) {
					t.Fatalf("error %v, want a parse error", err)
				}
			default:
				if !errors.As(err, &te) || te.Code != tt.code || te.Status != tt.status || strings.ContainsAny(err.Error(), "\r\n") {
					t.Fatalf("error %#v", err)
				}
			}
		})
	}
}

func TestLoadCredential(t *testing.T) {
	dir := t.TempDir()
	secret, empty := testfs.Write(t, dir, "secret", "s3cret~value\r\n"), testfs.Write(t, dir, "empty", "\n")
	pem, key := filepath.Join("testdata", "s2s.pem"), filepath.Join("testdata", "s2s.key")
	tests := []struct {
		name                  string
		cert, key, secretFile string
		wantCert              bool
		wantSecret            string
		err                   string
	}{
		{"certificate and key", pem, key, "", true, "", ""},
		{"secret", "", "", secret, false, "s3cret~value", ""},
		{"certificate without its key", pem, "", "", false, "", "PRIVATE KEY"},
		{"both", pem, key, secret, false, "", "not both"},
		{"key alone", "", key, "", false, "", "without its certificate"},
		{"nothing", "", "", "", false, "", "is required"},
		{"empty secret", "", "", empty, false, "", "is empty"},
		{"missing secret", "", "", filepath.Join(dir, "missing"), false, "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o AppTokenOptions
			err := o.LoadCredential(tt.cert, tt.key, tt.secretFile)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || (o.Certificate != nil) != tt.wantCert || o.Secret != tt.wantSecret {
				t.Fatalf("options %+v, %v", o, err)
			}
		})
	}
}
