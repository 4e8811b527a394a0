package ingest_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

// scoped is an ingest server with scoped credentials only.
type scoped struct {
	url    string
	server *ingest.Server
	conn   *broker.Conn
	store  *credentials.Store
	index  *credentials.Index
	subs   *subscriptions.Store
}

// newScoped starts an ingest server whose only credentials are scoped
// ones, with the subscriptions API, or, when x is given, with everything
// x mounts.
func newScoped(t *testing.T, x ...*ingest.Extras) *scoped {
	t.Helper()
	return newScopedConfig(t, ingest.DefaultConfig(), x...)
}

// newScopedConfig is newScoped with another config.
func newScopedConfig(t *testing.T, cfg ingest.Config, x ...*ingest.Extras) *scoped {
	t.Helper()
	ctx := context.Background()
	conn := brokertest.Start(t)
	store, err := credentials.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	index, err := store.Watch(wctx, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	keyer, err := broker.Keyer(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ingest.NewPublisher(conn.NC, keyer, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ingest.New(cfg, ingest.Deps{Publisher: pub, Log: zerolog.Nop(), Registry: prometheus.NewRegistry(), Credentials: index})
	if err != nil {
		t.Fatal(err)
	}
	subs, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		t.Fatal(err)
	}
	exts := []ingest.Extension{ingest.SubscriptionsAPI(subs)}
	if len(x) > 0 {
		if exts, err = x[0].Extensions(ctx, conn, prometheus.NewRegistry()); err != nil {
			t.Fatal(err)
		}
	}
	for _, ext := range exts {
		if err := ext(srv); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &scoped{url: hs.URL, server: srv, conn: conn, store: store, index: index, subs: subs}
}

// credential creates a credential and returns its secret.
func (s *scoped) credential(t *testing.T, spec credentials.Spec) (credentials.Credential, string) {
	t.Helper()
	c, secret, err := s.store.Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	// The index follows the bucket through a watch.
	deadline := time.Now().Add(5 * time.Second)
	for !s.index.Has(c.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("credential %s never reached the index", c.ID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c, secret
}

// call sends one request with a Bearer secret and returns the status.
func (s *scoped) call(t *testing.T, method, path, secret, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus retries a request until it answers want: the index follows
// the bucket through a watch.
func (s *scoped) waitStatus(t *testing.T, want int, method, path, secret, body string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := s.call(t, method, path, secret, body)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: %d, want %d", method, path, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrossTenantMatrix tries every role of tenant a.example against every
// endpoint, for its own tenant and for b.example: the other tenant always
// gets 403 and nothing is stored or returned; its own tenant works where
// the role allows it.
func TestCrossTenantMatrix(t *testing.T) {
	s := newScoped(t)
	event := func(tenant string) string {
		return `{"tenant":"` + tenant + `","user":"u@` + tenant + `","kind":"new","unread":1,"change_id":"` + tenant + `-1"}`
	}
	sub := func(tenant string) string {
		return `{"tenant":"` + tenant + `","user":"u@` + tenant + `","appId":"app","deviceId":"device-token-0123456789","platform":"APNS"}`
	}
	endpoints := []struct {
		name, method string
		path         func(tenant string) string
		body         func(tenant string) string
		role         credentials.Role
	}{
		{"post events", http.MethodPost, func(string) string { return "/v1/events" }, event, credentials.RoleEvents},
		{"subscribe", http.MethodPost, func(string) string { return "/v1/subscriptions" }, sub, credentials.RoleSubscriptions},
		{"list", http.MethodGet, func(tenant string) string { return "/v1/subscriptions?tenant=" + tenant + "&user=u@" + tenant }, func(string) string { return "" }, credentials.RoleRead},
		{"unsubscribe", http.MethodDelete, func(tenant string) string {
			return "/v1/subscriptions?tenant=" + tenant + "&user=u@" + tenant + "&appId=app&deviceId=device-token-0123456789"
		}, func(string) string { return "" }, credentials.RoleSubscriptions},
	}
	for _, role := range credentials.Roles {
		_, secret := s.credential(t, credentials.Spec{Kind: credentials.KindBearer, Tenants: []string{"a.example"}, Roles: []credentials.Role{role}})
		for _, ep := range endpoints {
			t.Run(string(role)+"/"+ep.name, func(t *testing.T) {
				if got := s.call(t, ep.method, ep.path("b.example"), secret, ep.body("b.example")); got != http.StatusForbidden {
					t.Errorf("tenant b.example: %d, want 403", got)
				}
				allowed := role == credentials.RoleAdmin || role == ep.role || (ep.role == credentials.RoleRead && role == credentials.RoleSubscriptions)
				got := s.call(t, ep.method, ep.path("a.example"), secret, ep.body("a.example"))
				if allowed && (got == http.StatusForbidden || got == http.StatusUnauthorized || got >= 500) {
					t.Errorf("own tenant with role %s: %d, want it served", role, got)
				}
				if !allowed && got != http.StatusForbidden {
					t.Errorf("own tenant with role %s: %d, want 403", role, got)
				}
			})
		}
	}
	stored := brokertest.Events(t, s.conn.JS)
	if len(stored) != 1 || stored[0].Tenant != "a.example" {
		t.Errorf("MAIL holds %+v, want the one event of a.example (stored once, then duplicates)", stored)
	}
	all, err := s.subs.ListAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range all {
		if sb.Tenant == "b.example" {
			t.Errorf("a subscription of b.example was stored: %+v", sb)
		}
	}
}

// TestCredentialLifecycle rotates and revokes a credential: each change
// reaches ingest without a restart.
func TestCredentialLifecycle(t *testing.T) {
	s := newScoped(t)
	event := `{"tenant":"a.example","user":"u@a.example","kind":"new","change_id":"c1"}`
	c, old := s.credential(t, credentials.Spec{Kind: credentials.KindBearer, Tenants: []string{"a.example"}, Roles: []credentials.Role{credentials.RoleEvents}})
	s.waitStatus(t, http.StatusOK, http.MethodPost, "/v1/events", old, event)
	_, fresh, err := s.store.Rotate(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, http.StatusUnauthorized, http.MethodPost, "/v1/events", old, event)
	s.waitStatus(t, http.StatusOK, http.MethodPost, "/v1/events", fresh, event)
	if err := s.store.Revoke(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, http.StatusUnauthorized, http.MethodPost, "/v1/events", fresh, event)
	if got := s.call(t, http.MethodPost, "/v1/events", "ppk_"+c.ID+".guess", event); got != http.StatusUnauthorized {
		t.Fatalf("a guessed secret: %d, want 401", got)
	}
}

// TestScopedDovecotCredential posts a Dovecot OX event with a basic
// credential of one tenant: its own tenant is stored, another is refused.
func TestScopedDovecotCredential(t *testing.T) {
	s := newScoped(t)
	_, password := s.credential(t, credentials.Spec{Kind: credentials.KindBasic, User: "dovecot-a", Tenants: []string{"a.example"}, Roles: []credentials.Role{credentials.RoleEvents}})
	send := func(user string) int {
		body := `{"user":"` + user + `","event":"messageNew","folder":"INBOX","imap-uidvalidity":1,"imap-uid":4,"unseen":2}`
		req, err := http.NewRequest(http.MethodPut, s.url+"/v1/dovecot/ox", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("dovecot-a", password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send("alice@a.example"); got != http.StatusOK {
		t.Fatalf("own tenant: %d, want 200", got)
	}
	if got := send("bob@b.example"); got != http.StatusForbidden {
		t.Fatalf("other tenant: %d, want 403", got)
	}
}

// TestWebPushSubscriptionsThatCanWork subscribes Web Push devices: only a
// well-formed subscription with a public https endpoint is stored.
func TestWebPushSubscriptionsThatCanWork(t *testing.T) {
	s := newScoped(t)
	_, secret := s.credential(t, credentials.Spec{Kind: credentials.KindBearer, Tenants: []string{"a.example"}, Roles: []credentials.Role{credentials.RoleSubscriptions}})
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256dh := base64.RawURLEncoding.EncodeToString(key.PublicKey().Bytes())
	auth := base64.RawURLEncoding.EncodeToString(make([]byte, 16))
	device := func(endpoint, p256dh, auth string) string {
		d, _ := json.Marshal(map[string]any{"endpoint": endpoint, "keys": map[string]string{"p256dh": p256dh, "auth": auth}})
		return string(d)
	}
	tests := []struct {
		name, device string
		status       int
	}{
		{"public https endpoint", device("https://push.example.net/send/abc", p256dh, auth), http.StatusCreated},
		{"not JSON", "token-of-another-platform", http.StatusUnprocessableEntity},
		{"plain http", device("http://push.example.net/send/abc", p256dh, auth), http.StatusUnprocessableEntity},
		{"loopback", device("https://127.0.0.1:8443/send/abc", p256dh, auth), http.StatusUnprocessableEntity},
		{"localhost", device("https://localhost/send/abc", p256dh, auth), http.StatusUnprocessableEntity},
		{"private network", device("https://10.1.2.3/send/abc", p256dh, auth), http.StatusUnprocessableEntity},
		{"short auth", device("https://push.example.net/send/abc", p256dh, "AAAA"), http.StatusUnprocessableEntity},
		{"key not on the curve", device("https://push.example.net/send/abc", base64.RawURLEncoding.EncodeToString(make([]byte, 65)), auth), http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"tenant": "a.example", "user": "u@a.example", "appId": "web", "deviceId": tt.device, "platform": "WebPush"})
			if got := s.call(t, http.MethodPost, "/v1/subscriptions", secret, string(body)); got != tt.status {
				t.Fatalf("status %d, want %d", got, tt.status)
			}
		})
	}
}

// TestGraphClientStateCredential checks a clientState made by pushctl
// credentials create --kind graph: it reports for its tenant, gets 403 for
// another (nothing stored) and 401 once revoked.
func TestGraphClientStateCredential(t *testing.T) {
	dir := testfs.Write(t, t.TempDir(), "graph-users.json", `{"users":[
		{"user_id":"8ee44408-0679-472c-bc2a-692812af3437","tenant":"fabrikam.com","address":"alice@fabrikam.com"},
		{"user_id":"5d1c7e8a-3b2f-4c6d-9e0a-1f2b3c4d5e6f","tenant":"contoso.com","address":"bob@contoso.com"}]}`)
	s := newScoped(t, &ingest.Extras{Graph: &graph.Settings{UsersFile: dir}})
	if _, _, err := s.store.Create(context.Background(), credentials.Spec{Kind: credentials.KindGraph, Tenants: []string{"fabrikam.com"}, Roles: []credentials.Role{credentials.RoleAdmin}}); !errors.Is(err, credentials.ErrInvalid) {
		t.Fatalf("a graph credential with the admin role: %v", err)
	}
	cred, secret := s.credential(t, credentials.Spec{Kind: credentials.KindGraph, Tenants: []string{"fabrikam.com"}})
	if len(cred.Roles) != 1 || cred.Roles[0] != credentials.RoleEvents {
		t.Fatalf("graph credential roles %v, want [events]", cred.Roles)
	}
	_, bearer := s.credential(t, credentials.Spec{Kind: credentials.KindBearer, Tenants: []string{"fabrikam.com"}, Roles: []credentials.Role{credentials.RoleEvents}})
	note := func(state, userID string) string {
		return `{"value":[{"subscriptionId":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","clientState":"` + state +
			`","changeType":"created","resource":"Users/` + userID + `/Messages/m1","resourceData":{"@odata.type":"#Microsoft.Graph.Message","id":"m1"}}]}`
	}
	const alice, bob = "8ee44408-0679-472c-bc2a-692812af3437", "5d1c7e8a-3b2f-4c6d-9e0a-1f2b3c4d5e6f"
	tests := []struct {
		name, body string
		want       int
		stored     int
	}{
		{"own tenant", note(secret, alice), http.StatusAccepted, 1},
		{"other tenant", note(secret, bob), http.StatusForbidden, 1},
		{"unknown secret", note(secret+"x", alice), http.StatusUnauthorized, 1},
		{"bearer secret as clientState", note(bearer, alice), http.StatusUnauthorized, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.call(t, http.MethodPost, "/v1/graph", "", tt.body); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
			if n := len(brokertest.Events(t, s.conn.JS)); n != tt.stored {
				t.Fatalf("%d events stored, want %d", n, tt.stored)
			}
		})
	}
	if err := s.store.Revoke(context.Background(), cred.ID); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, http.StatusUnauthorized, http.MethodPost, "/v1/graph", "", note(secret, alice))
}

// TestDeviceLimits subscribes devices through the API up to the tenant's
// limit: one more gets 409 with a body naming the tenant.
func TestDeviceLimits(t *testing.T) {
	cfg := ingest.DefaultConfig()
	cfg.DeviceLimits = subscriptions.Limits{PerUser: 2, PerTenant: 3}
	s := newScopedConfig(t, cfg)
	_, secret := s.credential(t, credentials.Spec{Kind: credentials.KindBearer, Tenants: []string{"fabrikam.com"}, Roles: []credentials.Role{credentials.RoleSubscriptions}})
	device := func(user, dev string) string {
		return `{"tenant":"fabrikam.com","user":"` + user + `@fabrikam.com","appId":"com.example.mail","deviceId":"` + dev + `","platform":"apns"}`
	}
	steps := []struct {
		user, dev string
		want      int
	}{
		{"alice", "a1", http.StatusCreated},
		{"alice", "a2", http.StatusCreated},
		{"alice", "a3", http.StatusConflict}, // the user's limit
		{"bob", "b1", http.StatusCreated},
		{"bob", "b2", http.StatusConflict}, // the tenant's limit
		{"alice", "a1", http.StatusOK},     // a refresh always passes
	}
	for _, st := range steps {
		if got := s.call(t, http.MethodPost, "/v1/subscriptions", secret, device(st.user, st.dev)); got != st.want {
			t.Fatalf("%s/%s: %d, want %d", st.user, st.dev, got, st.want)
		}
	}
	subs, err := s.subs.ListAll(context.Background())
	if err != nil || len(subs) != 3 {
		t.Fatalf("stored %d subscriptions (%v), want 3", len(subs), err)
	}
}

// TestEWSKeyCredential checks a URL key made by pushctl credentials create
// --kind ews: it reports for its tenant's subscriptions, gets 403 for
// another's (nothing stored) and 401 once revoked; with --ews-require-key
// a request without a known key gets 401.
func TestEWSKeyCredential(t *testing.T) {
	registry := filepath.Join(t.TempDir(), "ews.json")
	testfs.WriteFile(t, registry, `{"subscriptions":[{"subscription_id":"FwBleGNoMDEuZmFicmlrYW0uY29tEAAAAL9T5gfVLkJMqeS2ZbJhFyPX4JtH5NPaCA==","tenant":"fabrikam.com","user":"alice@fabrikam.com","inbox_folder_id":"AAMkADk1ZGY0ZjNmLTJmZjMtNDg4Zi1hYzQ1LTBmMmRiOTQ2ZGE5NAAuAAAAAACJhUi+Ncr4QbV9dCaXEVhHAQCdQw6nHzAxRpkuT1MdYAp0AAAAAAEMAAA="}]}`, 0o600)
	body := testfs.Read(t, "../sources/ews/testdata/sendnotification_newmail.xml")
	s := newScoped(t, &ingest.Extras{EWS: &ews.Settings{SubscriptionsFile: registry, RequireKey: true}})
	own, ownKey := s.credential(t, credentials.Spec{Kind: credentials.KindEWS, Tenants: []string{"fabrikam.com"}})
	_, otherKey := s.credential(t, credentials.Spec{Kind: credentials.KindEWS, Tenants: []string{"contoso.com"}})
	_, bearer := s.credential(t, credentials.Spec{Kind: credentials.KindBearer, Tenants: []string{"fabrikam.com"}, Roles: []credentials.Role{credentials.RoleEvents}})
	post := func(key string) int {
		t.Helper()
		resp, err := http.Post(s.url+"/v1/ews?key="+url.QueryEscape(key), "text/xml; charset=utf-8", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name, key string
		want      int
	}{
		{"other tenant's key", otherKey, http.StatusForbidden},
		{"no key", "", http.StatusUnauthorized},
		{"bearer secret as key", bearer, http.StatusUnauthorized},
		{"own tenant's key", ownKey, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(brokertest.Events(t, s.conn.JS))
			got := post(tt.key)
			if got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
			after := len(brokertest.Events(t, s.conn.JS))
			if stored := after > before; stored != (tt.want == http.StatusOK) {
				t.Fatalf("%d events stored before, %d after", before, after)
			}
		})
	}
	if err := s.store.Revoke(context.Background(), own.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for post(ownKey) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("a revoked key still works")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTokenFilesReload rewrites the native token file and the Dovecot
// password file of a running server: the new ones work and the old ones
// stop, without a restart.
func TestTokenFilesReload(t *testing.T) {
	dir := t.TempDir()
	tokens, password := filepath.Join(dir, "tokens"), filepath.Join(dir, "dovecot-password")
	testfs.WriteFile(t, tokens, "old-token\n", 0o600)
	testfs.WriteFile(t, password, "old-password\n", 0o600)
	cfg := ingest.DefaultConfig()
	cfg.NativeTokenFile, cfg.DovecotUser, cfg.DovecotPasswordFile = tokens, "dovecot", password
	s := newScopedConfig(t, cfg)
	srv := s.server
	event := `{"user":"alice@fabrikam.com","tenant":"fabrikam.com","kind":"new","change_id":"c-1"}`
	dovecot := func(pw string) int {
		req, err := http.NewRequest(http.MethodPost, s.url+"/v1/dovecot/ox", strings.NewReader(`{"user":"alice@fabrikam.com","event":"MessageNew","folder":"INBOX","imap-uid":"1","imap-uidvalidity":"1"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("dovecot", pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := s.call(t, http.MethodPost, "/v1/events", "old-token", event); got != http.StatusOK {
		t.Fatalf("old token before the reload: %d", got)
	}
	if got := dovecot("old-password"); got == http.StatusUnauthorized {
		t.Fatal("old Dovecot password refused before the reload")
	}

	testfs.WriteFile(t, tokens, "new-token\n", 0o600)
	testfs.WriteFile(t, password, "new-password\n", 0o600)
	if err := srv.ReloadSecrets(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  int
		want int
	}{
		{"old token", s.call(t, http.MethodPost, "/v1/events", "old-token", event), http.StatusUnauthorized},
		{"new token", s.call(t, http.MethodPost, "/v1/events", "new-token", event), http.StatusOK},
		{"old Dovecot password", dovecot("old-password"), http.StatusUnauthorized},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s after the reload: %d, want %d", tt.name, tt.got, tt.want)
		}
	}
	if got := dovecot("new-password"); got == http.StatusUnauthorized {
		t.Error("new Dovecot password refused after the reload")
	}

	// An unreadable file changes nothing.
	if err := os.Remove(tokens); err != nil {
		t.Fatal(err)
	}
	if err := srv.ReloadSecrets(); err == nil {
		t.Error("a missing token file reloaded without an error")
	}
	if got := s.call(t, http.MethodPost, "/v1/events", "new-token", event); got != http.StatusOK {
		t.Errorf("the token of a file that went missing: %d, want it kept", got)
	}
}
