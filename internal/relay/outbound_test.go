package relay

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pushproxy/pushproxy/internal/providers/webpush"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestProviderCAFile(t *testing.T) {
	apns := newAPNsService(t, 0)
	tests := []struct {
		name   string
		caFile string
		wanted func(relayproto.DeviceResult) bool
	}{
		// Without the CA the push service's certificate is unknown: a
		// network failure, transient.
		{"system roots only", "", func(d relayproto.DeviceResult) bool { return d.Class == relayproto.ClassTransient }},
		{"with --provider-ca-file", caFile(t, apns.srv), delivered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, Config{ProviderCAFile: tt.caFile}, false)
			token := r.addPartner(t, "fabrikam.com")
			r.addAPNsApp(t, token, "fabrikam.com", "com.fabrikam.mail", apns.srv.URL, tt.wanted)
		})
	}
}

// webPushSubscription returns a browser's subscription JSON for endpoint,
// with fresh keys.
func webPushSubscription(t *testing.T, endpoint string) string {
	t.Helper()
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	var s webpush.Subscription
	s.Endpoint = endpoint
	s.Keys.P256DH = base64.RawURLEncoding.EncodeToString(key.PublicKey().Bytes())
	s.Keys.Auth = base64.RawURLEncoding.EncodeToString(auth)
	return string(mustJSON(t, s))
}

// writeVAPIDKey writes a new VAPID private key and returns its path.
func writeVAPIDKey(t *testing.T) string {
	t.Helper()
	priv, _, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	path := testfs.Write(t, t.TempDir(), "vapid.key", priv)
	return path
}

// TestWebPushEndpointPolicy: Web Push endpoints come from subscriptions,
// so by default the relay does not connect to a loopback or private
// address, whether the endpoint names it or a DNS name resolves to it;
// that is an app fault (no subscription is removed), and
// --allow-insecure-endpoints lets tests use a local push service.
func TestWebPushEndpointPolicy(t *testing.T) {
	var reached atomic.Int32
	ps := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		reached.Add(1)
		w.WriteHeader(http.StatusCreated)
	}))
	ps.EnableHTTP2 = true
	ps.Config.ErrorLog = log.New(io.Discard, "", 0)
	ps.StartTLS()
	t.Cleanup(ps.Close)
	byName := strings.Replace(ps.URL, "127.0.0.1", "localhost", 1)
	notPublic := func(d relayproto.DeviceResult) bool {
		return d.Class == relayproto.ClassAppFault && strings.Contains(d.Reason, "EndpointNotPublic")
	}
	tests := []struct {
		name     string
		endpoint string
		insecure bool
		wanted   func(relayproto.DeviceResult) bool
	}{
		{"loopback address refused", ps.URL, false, notPublic},
		{"name resolving to loopback refused", byName, false, notPublic},
		{"loopback address allowed for tests", ps.URL, true, delivered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, Config{ProviderCAFile: caFile(t, ps), AllowInsecureEndpoints: tt.insecure}, false)
			token := r.addPartner(t, "fabrikam.com")
			before := reached.Load()
			app := registry.App{AppID: "webmail", Provider: registry.KindWebPush, Organizations: []string{"fabrikam.com"},
				WebPush: &registry.WebPush{PrivateKeyFile: writeVAPIDKey(t), Subject: "mailto:ops@fabrikam.example"}}
			d := r.addApp(t, token, app, webPushSubscription(t, tt.endpoint+"/push/1"), tt.wanted)
			if d.Class != relayproto.ClassDelivered && reached.Load() != before {
				t.Fatalf("refused, but %d requests reached the push service", reached.Load()-before)
			}
			if d.Status == relayproto.DeviceGone {
				t.Fatalf("a refused endpoint would remove the subscription: %+v", d)
			}
			if strings.Contains(d.Reason, "127.0.0.1") || strings.Contains(d.Reason, "localhost") {
				t.Fatalf("the reason quotes the endpoint: %q", d.Reason)
			}
		})
	}
}
