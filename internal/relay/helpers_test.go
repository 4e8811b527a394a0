package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Names used across the tests.
const (
	testHost  = "relay.test"
	testRealm = "fabrikam-realm"
)

// recorder is a provider that records every badge and answers with what
// answer returns (nil by default). Before answering, a send waits until
// gate is closed, when there is a gate.
type recorder struct {
	name   string
	answer func(providers.Badge) error
	gate   chan struct{}

	mu      sync.Mutex
	badges  []providers.Badge
	started chan providers.Badge // gets every badge when Send starts, if set
	active  int
	peak    int
}

func newRecorder(name string) *recorder { return &recorder{name: name} }

func (r *recorder) Name() string { return r.name }

func (r *recorder) Send(ctx context.Context, b providers.Badge) error {
	r.mu.Lock()
	r.active++
	r.peak = max(r.peak, r.active)
	started := r.started
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.active--
		r.mu.Unlock()
	}()
	if started != nil {
		started <- b
	}
	if r.gate != nil {
		<-r.gate // deliberately ignores ctx: a stuck push service
	}
	r.mu.Lock()
	r.badges = append(r.badges, b)
	r.mu.Unlock()
	if r.answer != nil {
		return r.answer(b)
	}
	return nil
}

// sent returns the badges sent so far.
func (r *recorder) sent() []providers.Badge {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]providers.Badge(nil), r.badges...)
}

// routes is a Router over a fixed map, counting lookups.
type routes struct {
	mu     sync.Mutex
	apps   map[string]providers.Provider
	broken map[string]bool
	calls  int
}

func (r *routes) Route(_, appID string) (providers.Provider, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.broken[appID] {
		return nil, ErrAppUnavailable
	}
	p, ok := r.apps[appID]
	if !ok {
		return nil, ErrUnknownApp
	}
	return p, nil
}

func (r *routes) lookups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// partnerKey is a partner organisation's signing side in tests.
type partnerKey struct {
	org  string
	cert *tokens.Certificate
}

// newPartnerKey generates a signing certificate for org, valid since a day
// ago (so that tokens can be issued in the past).
func newPartnerKey(t testing.TB, org string) partnerKey {
	t.Helper()
	c, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: org, Now: func() time.Time { return time.Now().Add(-24 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	return partnerKey{org: org, cert: c}
}

// token issues a token as the partner would, changed by opts.
func (k partnerKey) token(t testing.TB, opts ...func(*tokens.IssuerOptions)) string {
	t.Helper()
	tok, err := k.issuer(t, opts...).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// issuer is the partner's token issuer, as its dispatcher has it, changed
// by opts.
func (k partnerKey) issuer(t testing.TB, opts ...func(*tokens.IssuerOptions)) *tokens.Issuer {
	t.Helper()
	o := tokens.IssuerOptions{IssuerID: settings.DefaultServiceName, Realm: testRealm, PrincipalID: settings.DefaultRelayPrincipal, Host: testHost}
	for _, f := range opts {
		f(&o)
	}
	iss, err := tokens.NewIssuer(k.cert, o)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// harness is a relay Server over an in-memory partner registry and fixed
// routes, served by httptest.
type harness struct {
	t       *testing.T
	srv     *Server
	http    *httptest.Server
	reg     *prometheus.Registry
	routes  *routes
	fab     partnerKey
	partner *tokens.Registry
}

// newHarness starts a relay with cfg (Host set) where fabrikam.com is a
// partner of realm testRealm and apps are the given providers.
func newHarness(t *testing.T, cfg Config, apps map[string]providers.Provider) *harness {
	t.Helper()
	cfg.Host = testHost
	if cfg.Addr == "" && cfg.PublicURL == "" {
		cfg.Addr = "127.0.0.1:0" // on loopback, no public URL is needed
	}
	h := &harness{t: t, reg: prometheus.NewRegistry(), routes: &routes{apps: apps, broken: map[string]bool{}}, partner: tokens.NewRegistry()}
	h.fab = newPartnerKey(t, "fabrikam.com")
	h.addPartner(h.fab, testRealm)
	v, err := tokens.NewVerifier(tokens.VerifierOptions{PrincipalID: settings.DefaultRelayPrincipal, Host: testHost, Partners: h.partner})
	if err != nil {
		t.Fatal(err)
	}
	h.srv, err = NewServer(cfg, v, h.routes, h.reg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.srv.Register(mux)
	h.http = httptest.NewServer(mux)
	t.Cleanup(h.http.Close)
	return h
}

// addPartner registers k's certificate for its organisation.
func (h *harness) addPartner(k partnerKey, realm string) {
	h.t.Helper()
	if err := h.partner.Put(tokens.Partner{Organization: k.org, Realm: realm, Certificates: []tokens.RegisteredCert{{Cert: k.cert.X509}}}); err != nil {
		h.t.Fatal(err)
	}
}

// reply is an HTTP answer of the relay.
type reply struct {
	status int
	header http.Header
	body   []byte
	// closed: the relay closed the connection after the answer.
	closed bool
}

// fault decodes the body as a Fault.
func (r reply) fault(t testing.TB) relayproto.Fault {
	t.Helper()
	var f relayproto.Fault
	if err := json.Unmarshal(r.body, &f); err != nil || f.Message == "" {
		t.Fatalf("body %q is not a fault: %v", r.body, err)
	}
	return f
}

// response decodes the body as a Response.
func (r reply) response(t testing.TB) relayproto.Response {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var resp relayproto.Response
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return resp
}

// post sends body to the publish endpoint with the given Authorization
// (none when empty) and Content-Type.
func (h *harness) post(auth, contentType string, body []byte) reply {
	h.t.Helper()
	return postTo(h.t, http.DefaultClient, h.http.URL+h.srv.PublishPath(), auth, contentType, body)
}

// publish sends req with a valid fabrikam.com token.
func (h *harness) publish(req relayproto.Request) reply {
	h.t.Helper()
	return h.post("Bearer "+h.fab.token(h.t), "application/json", mustJSON(h.t, req))
}

func postTo(t testing.TB, client *http.Client, url, auth, contentType string, body []byte) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set(relayproto.HeaderClientRequestID, "7d1c2a3b-0000-4000-8000-000000000001")
	req.Header.Set(relayproto.HeaderReturnClientRequestID, "True")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data, closed: resp.Close}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// notification is a notification of count for devices of apps, one
// recipient per (appId, deviceId) pair.
func notification(id string, count int, pairs ...string) relayproto.Notification {
	n := relayproto.Notification{ID: id, Payload: relayproto.Payload{TenantID: "contoso.com", UnseenEmailCount: count, Language: "es-ES", BackgroundSyncType: relayproto.BackgroundSyncEmail}}
	for i := 0; i+1 < len(pairs); i += 2 {
		n.Recipients = append(n.Recipients, relayproto.Recipient{AppID: pairs[i], DeviceID: pairs[i+1], LastSubscriptionUpdate: time.Now().Add(-time.Hour).UTC()})
	}
	return n
}

// waitFor polls cond until it holds, failing after a generous timeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
