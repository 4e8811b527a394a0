// Package e2e holds end-to-end tests that run the real components together
// on an embedded NATS JetStream server.
package e2e

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/ingest/ingesttest"
	"github.com/pushproxy/pushproxy/internal/nettest"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/providers/apns/apnstest"
	"github.com/pushproxy/pushproxy/internal/relay"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/test/partner"
)

const (
	org         = "fabrikam.com"
	topic       = "com.fabrikam.mail"
	apnsKeyID   = "KEY1234567"
	apnsTeamID  = "TEAM123456"
	nativeToken = "e2e-token"
)

// fakeAPNs is an APNs provider API over TLS and HTTP/2 that checks the
// provider token, the headers and the payload, and records each badge.
type fakeAPNs struct {
	t   *testing.T
	key *ecdsa.PublicKey
	srv *httptest.Server

	mu     sync.Mutex
	badges map[string][]int
}

func newFakeAPNs(t *testing.T, key *ecdsa.PublicKey) *fakeAPNs {
	f := &fakeAPNs{t: t, key: key, badges: map[string][]int{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPNs) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, reason string) {
		f.t.Errorf("fake APNs: %s", reason)
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"reason":%q}`, reason)
	}
	if r.ProtoMajor != 2 {
		fail(http.StatusBadRequest, "not HTTP/2")
		return
	}
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if r.Method != http.MethodPost || !ok {
		fail(http.StatusNotFound, "bad path "+r.URL.Path)
		return
	}
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "bearer ")
	parsed, err := jwt.Parse(bearer, func(tok *jwt.Token) (any, error) { return f.key, nil }, jwt.WithValidMethods([]string{"ES256"}))
	if err != nil || parsed.Header["kid"] != apnsKeyID {
		fail(http.StatusForbidden, "InvalidProviderToken")
		return
	}
	if claims := parsed.Claims.(jwt.MapClaims); claims["iss"] != apnsTeamID {
		fail(http.StatusForbidden, "InvalidProviderToken")
		return
	}
	if r.Header.Get("apns-topic") != topic || r.Header.Get("apns-push-type") == "" {
		fail(http.StatusBadRequest, "MissingTopic")
		return
	}
	var body struct {
		APS struct {
			Badge *int `json:"badge"`
		} `json:"aps"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.APS.Badge == nil {
		fail(http.StatusBadRequest, "PayloadEmpty")
		return
	}
	f.mu.Lock()
	f.badges[token] = append(f.badges[token], *body.APS.Badge)
	f.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (f *fakeAPNs) last(token string) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.badges[token]
	if len(b) == 0 {
		return 0, false
	}
	return b[len(b)-1], true
}

func writeP8(t *testing.T) (string, *ecdsa.PublicKey) {
	t.Helper()
	path, pub, err := apnstest.WriteKey(t.TempDir(), apnsKeyID)
	if err != nil {
		t.Fatal(err)
	}
	return path, pub
}

// TestEventBecomesAPNsBadge sends an event into ingest and expects the
// badge at a fake APNs server, through the dispatcher and the relay, with
// S2S tokens between them and a provider token toward APNs.
func TestEventBecomesAPNsBadge(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := brokertest.Start(t)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	reg := service.NewRegistry()
	keyPath, apnsKey := writeP8(t)
	apns := newFakeAPNs(t, apnsKey)
	relayAddr, ingestAddr := nettest.FreeAddr(t), nettest.FreeAddr(t)

	// The organization set up at both ends, as with pushctl.
	p := partner.New(t, ctx, conn.JS, org, relayAddr)
	apps := p.Registry
	if _, err := apps.AddApp(ctx, registry.App{AppID: topic, Provider: registry.KindAPNs, APNs: &registry.APNs{
		KeyFile: keyPath, KeyID: apnsKeyID, TeamID: apnsTeamID, Topic: topic, Environment: registry.APNsSandbox, Host: apns.srv.URL,
	}, Organizations: []string{org}}, false); err != nil {
		t.Fatal(err)
	}

	keyer := brokertest.Keyer(t, conn)
	subs, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		t.Fatal(err)
	}
	icfg := ingest.DefaultConfig()
	icfg.Addr, icfg.NativeTokens = ingestAddr, []string{nativeToken}
	run := map[string]func() error{
		"relay": func() error {
			return relay.Run(ctx, relay.Config{Addr: relayAddr, Host: "127.0.0.1", ProviderHTTPClient: apns.srv.Client()}, conn, log, reg)
		},
		"ingest": func() error { return ingest.Run(ctx, icfg, conn, log, reg, ingest.SubscriptionsAPI(subs)) },
		"dispatcher": func() error {
			return dispatcher.Run(ctx, dispatcher.Config{Tokens: p.Tokens, Coalesce: coalesce.Config{Window: 20 * time.Millisecond}}, conn, log, reg)
		},
	}
	var wg sync.WaitGroup
	for name, f := range run {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	defer wg.Wait()
	defer cancel()

	device := hex.EncodeToString(make([]byte, 32))
	device = strings.Replace(device, "00", "ab", 4)
	base := "http://" + ingestAddr
	waitFor(t, "ingest to serve", func() bool { return get(base+"/readyz") == http.StatusOK })
	if code := post(t, base+"/v1/subscriptions", fmt.Sprintf(`{"tenant":%q,"user":"alice@%s","appId":%q,"deviceId":%q,"platform":"APNS"}`, org, org, topic, device)); code != http.StatusCreated {
		t.Fatalf("subscribe: %d", code)
	}
	for i, body := range []string{
		`{"user":"alice@fabrikam.com","kind":"new","unread":5,"change_id":"m-1","occurred_at":"2026-11-25T10:00:00Z"}`,
		`{"user":"alice@fabrikam.com","kind":"read","unread":4,"change_id":"m-2","occurred_at":"2026-11-25T10:00:01Z"}`,
	} {
		if code := post(t, base+"/v1/events", body); code != http.StatusOK {
			t.Fatalf("event %d: %d", i, code)
		}
		want := 5 - i
		waitFor(t, fmt.Sprintf("badge %d at APNs", want), func() bool { n, ok := apns.last(device); return ok && n == want })
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// post sends body to ingest's url as the native client of the test.
func post(t *testing.T, url, body string) int {
	t.Helper()
	return ingesttest.Post(t, url, nativeToken, body)
}
