package relay

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// wantChallenge is the WWW-Authenticate value of the test relay (multi-tenant,
// so the realm is "*").
const wantChallenge = `Bearer client_id="` + settings.DefaultRelayPrincipal + `", trusted_issuers="` + settings.DefaultServiceName + `@*"`

// signed signs claims with k's key and names k's certificate in x5t.
func (k partnerKey) signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["x5t"] = k.cert.X5T()
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims are valid claims for the test relay, changed by change.
func claims(change func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	iss := settings.DefaultServiceName + "@" + testRealm
	c := jwt.MapClaims{
		"aud":                  settings.DefaultRelayPrincipal + "/" + testHost + "@" + testRealm,
		"iss":                  iss,
		"nameid":               iss,
		"trustedfordelegation": "true",
		"nbf":                  now.Unix(),
		"exp":                  now.Add(time.Hour).Unix(),
	}
	if change != nil {
		change(c)
	}
	return c
}

func TestTokenRejectionsForwardNothing(t *testing.T) {
	rec := newRecorder("apns")
	h := newHarness(t, Config{}, map[string]providers.Provider{"mail": rec})
	stranger := newPartnerKey(t, "stranger.example")
	lapsed := newPartnerKey(t, "lapsed.example")
	if err := h.partner.Put(tokens.Partner{Organization: lapsed.org, Realm: testRealm, Certificates: []tokens.RegisteredCert{{
		Cert: lapsed.cert.X509, NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
	}}}); err != nil {
		t.Fatal(err)
	}
	valid := h.fab.token(t)
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(mustJSON(t, claims(func(c jwt.MapClaims) { c["iss"] = "evil@" + testRealm }))) + "." + parts[2]

	tests := []struct {
		name   string
		auth   string
		reason string
	}{
		{"no Authorization header", "", "missing_token"},
		{"Basic credentials", "Basic dXNlcjpwYXNz", "missing_token"},
		{"empty bearer", "Bearer ", "malformed_token"},
		{"not a JWT", "Bearer not.a.jwt", "malformed_token"},
		{"too large", "Bearer " + strings.Repeat("a", tokens.DefaultMaxTokenSize+1), "token_too_large"},
		{"alg none", "Bearer " + h.fab.signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)), "unsupported_algorithm"},
		{"HMAC keyed with the public certificate", "Bearer " + h.fab.signed(t, jwt.SigningMethodHS256, h.fab.cert.X509.Raw, claims(nil)), "unsupported_algorithm"},
		{"unregistered certificate", "Bearer " + stranger.token(t), "unknown_key"},
		{"certificate outside its registration", "Bearer " + lapsed.token(t), "key_not_active"},
		{"tampered claims", "Bearer " + tampered, "bad_signature"},
		{"expired", "Bearer " + h.fab.token(t, func(o *tokens.IssuerOptions) {
			o.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) }
		}), "expired"},
		{"not yet valid", "Bearer " + h.fab.token(t, func(o *tokens.IssuerOptions) {
			o.Now = func() time.Time { return time.Now().Add(time.Hour) }
		}), "not_yet_valid"},
		{"lifetime too long", "Bearer " + h.fab.signed(t, jwt.SigningMethodRS256, h.fab.cert.Key, claims(func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(48 * time.Hour).Unix()
		})), "lifetime_too_long"},
		{"audience of another relay", "Bearer " + h.fab.token(t, func(o *tokens.IssuerOptions) { o.Host = "other.test" }), "wrong_audience"},
		{"issuer of another realm", "Bearer " + h.fab.signed(t, jwt.SigningMethodRS256, h.fab.cert.Key, claims(func(c jwt.MapClaims) {
			c["iss"], c["nameid"] = settings.DefaultServiceName+"@other-realm", settings.DefaultServiceName+"@other-realm"
		})), "wrong_issuer"},
		{"nameid differs from iss", "Bearer " + h.fab.signed(t, jwt.SigningMethodRS256, h.fab.cert.Key, claims(func(c jwt.MapClaims) {
			c["nameid"] = "someone-else@" + testRealm
		})), "wrong_issuer"},
	}
	body := mustJSON(t, relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 3, "mail", "device-1")}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(h.srv.metrics.authFailures.WithLabelValues(tt.reason))
			r := h.post(tt.auth, "application/json", body)
			if r.status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", r.status, r.body)
			}
			challenge := r.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(challenge, wantChallenge) {
				t.Fatalf("WWW-Authenticate %q, want %q", challenge, wantChallenge)
			}
			if hasError := strings.Contains(challenge, `error="invalid_token"`); hasError == (tt.reason == "missing_token") {
				t.Fatalf("WWW-Authenticate %q: error=invalid_token only when a token was presented", challenge)
			}
			if f := r.fault(t); f.CanRetry {
				t.Fatalf("fault %+v: a bad token cannot be retried as is", f)
			}
			if got := testutil.ToFloat64(h.srv.metrics.authFailures.WithLabelValues(tt.reason)); got != before+1 {
				t.Fatalf("auth failures{reason=%s} = %v, want %v", tt.reason, got, before+1)
			}
		})
	}
	if len(rec.sent()) != 0 || h.routes.lookups() != 0 {
		t.Fatalf("a rejected request reached the providers: %d badges, %d lookups", len(rec.sent()), h.routes.lookups())
	}

	// A rejected token is refused before the body is even read.
	r := h.post("Bearer "+stranger.token(t), "text/plain", []byte("{not json"))
	if r.status != http.StatusUnauthorized {
		t.Fatalf("bad token with a bad body: %d, want 401", r.status)
	}

	// And the valid token passes, to show the cases above failed for their reason.
	if resp := h.publish(relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 3, "mail", "device-1")}}).response(t); resp.Results[0].Devices[0].Status != relayproto.DeviceDelivered {
		t.Fatalf("valid token: %+v", resp)
	}
}

func TestTenantComesFromTheToken(t *testing.T) {
	rec := newRecorder("apns")
	h := newHarness(t, Config{}, map[string]providers.Provider{"mail": rec})
	contoso := newPartnerKey(t, "contoso.com")
	h.addPartner(contoso, "contoso-realm")

	n := notification("n1", 7, "mail", "device-1")
	n.Payload.TenantID = "contoso.com" // a lie: the token is fabrikam's
	r := h.publish(relayproto.Request{Notifications: []relayproto.Notification{n}})
	if st := r.response(t).Results[0].Devices[0].Status; st != relayproto.DeviceDelivered {
		t.Fatalf("status %s", st)
	}
	n.Payload.TenantID = "fabrikam.com"
	tok := contoso.token(t, func(o *tokens.IssuerOptions) { o.Realm = "contoso-realm" })
	r = h.post("Bearer "+tok, "application/json", mustJSON(t, relayproto.Request{Notifications: []relayproto.Notification{n}}))
	r.response(t)

	sent := rec.sent()
	if len(sent) != 2 || sent[0].Tenant != "fabrikam.com" || sent[1].Tenant != "contoso.com" {
		t.Fatalf("tenants %+v, want fabrikam.com then contoso.com from the tokens", sent)
	}
	b := sent[0]
	if b.Count != 7 || b.AppID != "mail" || b.Device != "device-1" || !b.BackgroundSync || b.Language != "es-ES" || b.ID != "n1" {
		t.Fatalf("badge %+v", b)
	}
}

func TestMonitoringIsAnsweredWithoutProviders(t *testing.T) {
	rec := newRecorder("apns")
	h := newHarness(t, Config{}, map[string]providers.Provider{"mail": rec, relayproto.MonitoringAppID: rec})
	r := h.publish(relayproto.Request{Notifications: []relayproto.Notification{relayproto.ProbeNotification("probe-1", time.Now())}})
	resp := r.response(t)
	if len(resp.Results) != 1 || resp.Results[0].ID != "probe-1" {
		t.Fatalf("results %+v", resp.Results)
	}
	d := resp.Results[0].Devices[0]
	if d.Status != relayproto.DeviceDelivered || d.AppID != relayproto.MonitoringAppID || d.DeviceID != relayproto.MonitoringDeviceID {
		t.Fatalf("probe device %+v", d)
	}
	if len(rec.sent()) != 0 || h.routes.lookups() != 0 {
		t.Fatal("the probe reached a provider")
	}
	if got := r.header.Get(relayproto.HeaderClientRequestID); got != "7d1c2a3b-0000-4000-8000-000000000001" {
		t.Fatalf("client-request-id not returned: %q", got)
	}
	if testutil.ToFloat64(h.srv.metrics.notifications.WithLabelValues("monitoring")) != 1 {
		t.Fatal("monitoring notification not counted")
	}
}

func TestPerDeviceResults(t *testing.T) {
	unregisteredAt := time.Now().Add(-30 * time.Minute)
	answers := map[string]error{
		"ok":         nil,
		"gone":       &providers.Error{Provider: "apns", Status: 410, Reason: "Unregistered", Gone: true, GoneSince: unregisteredAt},
		"busy":       &providers.Error{Provider: "apns", Status: 429, Reason: "TooManyRequests", Retryable: true, RetryAfter: 90 * time.Second},
		"flaky":      &providers.Error{Provider: "apns", Status: 503, Reason: "ServiceUnavailable", Retryable: true},
		"slowdown":   &providers.Error{Provider: "apns", Status: 429, Reason: "TooManyRequests", Retryable: true},
		"wrongtopic": &providers.Error{Provider: "apns", Status: 400, Reason: "DeviceTokenNotForTopic", Err: errSecret},
		"opaque":     errSecret,
	}
	rec := newRecorder("apns")
	rec.answer = func(b providers.Badge) error { return answers[b.Device] }
	h := newHarness(t, Config{RetryBackOff: 45 * time.Second}, map[string]providers.Provider{"mail": rec})
	h.routes.broken["broken-app"] = true

	n1 := notification("n1", 2, "mail", "ok", "mail", "gone", "mail", "busy", "unknown-app", "dev")
	n2 := notification("n2", 2, "mail", "flaky", "mail", "slowdown", "mail", "wrongtopic", "mail", "opaque", "broken-app", "dev")
	// Refreshed after APNs saw the token go: kept, not pruned.
	reregistered := notification("n3", 2, "mail", "gone")
	reregistered.Recipients[0].LastSubscriptionUpdate = time.Now().UTC()

	resp := h.publish(relayproto.Request{Notifications: []relayproto.Notification{n1, n2, reregistered}}).response(t)
	want := []struct {
		id, device string
		class      relayproto.Class
		backOff    int64
		reason     string
	}{
		{"n1", "ok", relayproto.ClassDelivered, 0, ""},
		{"n1", "gone", relayproto.ClassDeviceGone, 0, "apns: 410 Unregistered"},
		{"n1", "busy", relayproto.ClassTransient, 90000, "apns: 429 TooManyRequests"},
		{"n1", "dev", relayproto.ClassAppFault, 0, `appId "unknown-app" is not registered`},
		// The push service down as a whole: the back-off of an outage
		// just begun (outage.go); asked to slow down without a
		// Retry-After: RetryBackOff.
		{"n2", "flaky", relayproto.ClassTransient, 1000, "apns: 503 ServiceUnavailable"},
		{"n2", "slowdown", relayproto.ClassTransient, 45000, "apns: 429 TooManyRequests"},
		{"n2", "wrongtopic", relayproto.ClassAppFault, 0, "apns: 400 DeviceTokenNotForTopic"},
		{"n2", "opaque", relayproto.ClassAppFault, 0, "apns: delivery failed"},
		{"n2", "dev", relayproto.ClassAppFault, 0, `appId "broken-app" cannot be served`},
		{"n3", "gone", relayproto.ClassTransient, 0, "refreshed after the device was unregistered"},
	}
	var got []relayproto.DeviceResult
	var ids []string
	for _, res := range resp.Results {
		for _, d := range res.Devices {
			got = append(got, d)
			ids = append(ids, res.ID)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d device results, want %d: %+v", len(got), len(want), resp)
	}
	for i, w := range want {
		d := got[i]
		if ids[i] != w.id || d.DeviceID != w.device || d.Class != w.class || d.Status != relayproto.StatusOf(w.class) || d.BackOffTimeInMilliseconds != w.backOff || !strings.Contains(d.Reason, w.reason) {
			t.Errorf("result %d = %s %+v, want %+v", i, ids[i], d, w)
		}
		if w.device == "gone" && !d.VerdictAt.Equal(unregisteredAt.UTC()) {
			t.Errorf("result %d: verdictAt %v, want the provider's %v", i, d.VerdictAt, unregisteredAt)
		}
		if strings.Contains(d.Reason, errSecret.Error()) {
			t.Errorf("result %d leaks the provider's underlying error: %q", i, d.Reason)
		}
	}
	if v := testutil.ToFloat64(h.srv.metrics.deliveries.WithLabelValues("apns", "gone")); v != 1 {
		t.Fatalf("deliveries{apns,gone} = %v", v)
	}
	if v := testutil.ToFloat64(h.srv.metrics.deliveries.WithLabelValues(noProvider, "retry")); v != 2 {
		t.Fatalf("deliveries{none,retry} = %v", v)
	}
	if v := testutil.ToFloat64(h.srv.metrics.appFaults.WithLabelValues("fabrikam.com", "unknown", noProvider)); v != 1 {
		t.Fatalf("app_faults{unknown app} = %v", v)
	}
	if v := testutil.ToFloat64(h.srv.metrics.appFaults.WithLabelValues("fabrikam.com", "mail", "apns")); v != 2 {
		t.Fatalf("app_faults{mail,apns} = %v", v)
	}
}

// errSecret stands for an underlying error that quotes a device address.
var errSecret = &secretError{}

type secretError struct{}

func (*secretError) Error() string { return "POST https://push.example/secret-endpoint-token: boom" }

func TestBadRequests(t *testing.T) {
	rec := newRecorder("apns")
	h := newHarness(t, Config{MaxBodyBytes: 4096}, map[string]providers.Provider{"mail": rec})
	valid := relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 1, "mail", "d")}}
	change := func(f func(*relayproto.Request)) []byte {
		r := relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 1, "mail", "d")}}
		f(&r)
		return mustJSON(t, r)
	}
	tests := []struct {
		name        string
		contentType string
		body        []byte
		status      int
		message     string
	}{
		{"text body", "text/plain", mustJSON(t, valid), 415, "Content-Type"},
		{"no content type", "", mustJSON(t, valid), 415, "Content-Type"},
		{"json with charset", "application/json; charset=utf-8", mustJSON(t, valid), 200, ""},
		{"malformed", "application/json", []byte(`{"notifications":[`), 400, "not valid JSON"},
		{"trailing data", "application/json", append(mustJSON(t, valid), []byte(` {"x":1}`)...), 400, "not valid JSON"},
		{"too large", "application/json", []byte(`{"notifications":[` + strings.Repeat(`{"id":"x"},`, 1000) + `]}`), 413, "larger than 4096 bytes"},
		{"wrong type", "application/json", []byte(`{"notifications":[{"id":"n","payload":{"unseenEmailCount":"three"}}]}`), 422, "unseenEmailCount"},
		{"no notifications", "application/json", []byte(`{"notifications":[]}`), 422, "at least one notification"},
		{"no id", "application/json", change(func(r *relayproto.Request) { r.Notifications[0].ID = "" }), 422, "notifications[0].id"},
		{"negative count", "application/json", change(func(r *relayproto.Request) { r.Notifications[0].Payload.UnseenEmailCount = -1 }), 422, "negative"},
		{"no recipients", "application/json", change(func(r *relayproto.Request) { r.Notifications[0].Recipients = nil }), 422, "recipients"},
		{"no deviceId", "application/json", change(func(r *relayproto.Request) { r.Notifications[0].Recipients[0].DeviceID = "" }), 422, "recipients[0].deviceId"},
		{"no appId", "application/json", change(func(r *relayproto.Request) { r.Notifications[0].Recipients[0].AppID = "" }), 422, "recipients[0].appId"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.post("Bearer "+h.fab.token(t), tt.contentType, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.status == 200 {
				return
			}
			f := r.fault(t)
			if f.CanRetry || !strings.Contains(f.Message, tt.message) {
				t.Fatalf("fault %+v, want CanRetry false and a message with %q", f, tt.message)
			}
		})
	}
	if len(rec.sent()) != 1 {
		t.Fatalf("%d badges sent, want only the valid request's", len(rec.sent()))
	}
}

func TestTenantRateLimit(t *testing.T) {
	rec := newRecorder("apns")
	h := newHarness(t, Config{TenantRate: 0.01, TenantBurst: 3}, map[string]providers.Provider{"mail": rec})
	contoso := newPartnerKey(t, "contoso.com")
	h.addPartner(contoso, "contoso-realm")
	two := relayproto.Request{Notifications: []relayproto.Notification{notification("a", 1, "mail", "d1"), notification("b", 1, "mail", "d2")}}

	h.publish(two).response(t)
	r := h.publish(two) // 2 more of a bucket with 1 left
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429: %s", r.status, r.body)
	}
	f := r.fault(t)
	if !f.CanRetry || f.BackOffTimeInMilliseconds <= 0 || f.BackOff() > relayproto.MaxBackOff || r.header.Get("Retry-After") == "" {
		t.Fatalf("429 fault %+v Retry-After %q: want CanRetry and a back-off", f, r.header.Get("Retry-After"))
	}
	if !strings.Contains(f.Message, "fabrikam.com: its quota at the relay is 0.01 per second with bursts of 3") {
		t.Fatalf("429 message %q does not name the quota", f.Message)
	}
	if len(rec.sent()) != 2 {
		t.Fatalf("the refused request was forwarded: %d badges", len(rec.sent()))
	}
	// The probe is never rate limited, and other tenants have their own bucket.
	probe := relayproto.Request{Notifications: []relayproto.Notification{relayproto.ProbeNotification("p", time.Now())}}
	h.publish(probe).response(t)
	tok := contoso.token(t, func(o *tokens.IssuerOptions) { o.Realm = "contoso-realm" })
	h.post("Bearer "+tok, "application/json", mustJSON(t, two)).response(t)
	if got := testutil.ToFloat64(h.srv.metrics.rateLimited.WithLabelValues("fabrikam.com")); got != 1 {
		t.Fatalf("rate limited{fabrikam.com} = %v", got)
	}
	// Notifications at the quota, per organization; the probe's are not.
	counts := []struct {
		tenant, result string
		want           float64
	}{
		{"fabrikam.com", quotaAccepted, 2},
		{"fabrikam.com", quotaHeldBack, 2},
		{"contoso.com", quotaAccepted, 2},
		{"contoso.com", quotaHeldBack, 0},
	}
	for _, c := range counts {
		if got := testutil.ToFloat64(h.srv.metrics.atQuota.WithLabelValues(c.tenant, c.result)); got != c.want {
			t.Errorf("tenant notifications{%s,%s} = %v, want %v", c.tenant, c.result, got, c.want)
		}
	}
	if got := testutil.CollectAndCount(h.srv.metrics.atQuota); got != len(counts) {
		t.Errorf("%d tenant notification series, want %d", got, len(counts))
	}
}

func TestSlowProviderDoesNotDelayAnother(t *testing.T) {
	slow, fast := newRecorder("apns"), newRecorder("fcm")
	slow.gate = make(chan struct{})
	slow.started = make(chan providers.Badge, 10)
	released := false
	release := func() {
		if !released {
			released = true
			close(slow.gate)
		}
	}
	defer release()
	h := newHarness(t, Config{ProviderLimit: Limit{Concurrency: 4, Timeout: time.Minute}}, map[string]providers.Provider{"ios": slow, "android": fast})

	// One request for both: the fast provider's send completes while the
	// slow one is still blocked.
	both := relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 5, "ios", "iphone", "android", "pixel")}}
	answered := make(chan reply, 1)
	go func() { answered <- h.publish(both) }()
	<-slow.started
	waitFor(t, "the fast provider's push while the slow one is blocked", func() bool { return len(fast.sent()) == 1 })
	if len(slow.sent()) != 0 {
		t.Fatal("the slow provider finished before it was released")
	}

	// A second request, only for the fast provider, is answered in full
	// while the slow lane is still busy with the first.
	only := relayproto.Request{Notifications: []relayproto.Notification{notification("n2", 6, "android", "pixel")}}
	if d := h.publish(only).response(t).Results[0].Devices[0]; d.Status != relayproto.DeviceDelivered {
		t.Fatalf("fast-only request while the slow lane is busy: %+v", d)
	}
	select {
	case r := <-answered:
		t.Fatalf("the first request was answered before its slow device: %s", r.body)
	default:
	}

	release()
	resp := (<-answered).response(t)
	for _, d := range resp.Results[0].Devices {
		if d.Status != relayproto.DeviceDelivered {
			t.Fatalf("after release: %+v", d)
		}
	}
}

func TestStuckProviderTimesOutWithRetry(t *testing.T) {
	stuck, fast := newRecorder("webpush"), newRecorder("fcm")
	stuck.gate = make(chan struct{})
	defer close(stuck.gate)
	h := newHarness(t, Config{
		ProviderLimit:  Limit{Concurrency: 8, Timeout: time.Minute},
		ProviderLimits: Limits{"webpush": {Concurrency: 1, Timeout: 300 * time.Millisecond}},
		RetryBackOff:   20 * time.Second,
	}, map[string]providers.Provider{"web": stuck, "android": fast})

	// The stuck provider ignores its context: the relay answers anyway, with
	// "retry" for its devices (including the one that never got a slot),
	// and the other provider's device delivered. A push service that does
	// not answer is down as a whole: the back-off is that of an outage
	// just begun, not RetryBackOff (outage.go).
	req := relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 1, "web", "sub-1", "web", "sub-2", "android", "pixel")}}
	resp := h.publish(req).response(t)
	devs := resp.Results[0].Devices
	wantReasons := []string{"webpush did not answer within 300ms", "webpush: this organization's app had all its 1 sends in flight for 300ms"}
	for i, d := range devs[:2] {
		if d.Status != relayproto.DeviceRetry || d.BackOffTimeInMilliseconds != backOffMillis(minOutageBackOff) || !slices.ContainsFunc(wantReasons, func(w string) bool { return strings.HasPrefix(d.Reason, w) }) {
			t.Fatalf("stuck device %d: %+v", i, d)
		}
	}
	if devs[2].Status != relayproto.DeviceDelivered {
		t.Fatalf("other provider's device: %+v", devs[2])
	}
	if len(stuck.sent()) != 0 {
		t.Fatal("the stuck provider was released early")
	}
}

func TestProviderConcurrencyLimit(t *testing.T) {
	rec := newRecorder("apns")
	rec.gate = make(chan struct{})
	rec.started = make(chan providers.Badge, 20)
	h := newHarness(t, Config{ProviderLimit: Limit{Concurrency: 2, Timeout: time.Minute}, ProviderShare: 2}, map[string]providers.Provider{"mail": rec})
	n := notification("n1", 1, "mail", "d1", "mail", "d2", "mail", "d3", "mail", "d4", "mail", "d5")
	answered := make(chan reply, 1)
	go func() { answered <- h.publish(relayproto.Request{Notifications: []relayproto.Notification{n}}) }()
	<-rec.started
	<-rec.started
	waitFor(t, "two sends in flight", func() bool {
		return testutil.ToFloat64(h.srv.metrics.inFlight.WithLabelValues("apns")) == 2
	})
	close(rec.gate)
	resp := (<-answered).response(t)
	if len(resp.Results[0].Devices) != 5 || len(rec.sent()) != 5 {
		t.Fatalf("results %+v", resp)
	}
	rec.mu.Lock()
	peak := rec.peak
	rec.mu.Unlock()
	if peak > 2 {
		t.Fatalf("%d sends at once, the limit is 2", peak)
	}
}

func TestMetadataDocument(t *testing.T) {
	const public = "https://push.example.net/PushNotifications"
	h := newHarness(t, Config{PublicURL: public}, nil)
	req, err := http.NewRequest(http.MethodGet, h.http.URL+h.srv.MetadataPath(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A forged Host must not reach the document (shared caches keep it).
	req.Host = "evil.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m tokens.Metadata
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	wantAud := settings.DefaultRelayPrincipal + "/" + testHost + "@*"
	if m.Issuer != settings.DefaultRelayPrincipal+"@*" || len(m.AllowedAudiences) != 1 || m.AllowedAudiences[0] != wantAud {
		t.Fatalf("metadata %+v", m)
	}
	if len(m.Endpoints) != 2 || m.Endpoints[0].Location != public+relayproto.PublishPath {
		t.Fatalf("endpoints %+v, want them under %s", m.Endpoints, public)
	}
}

func TestLimitsFlag(t *testing.T) {
	var limits Limits
	f := LimitsFlag{Limits: &limits}
	if err := f.Set("apns=128/15s, fcm=32"); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("WebPush=4"); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != "apns=128/15s,fcm=32,webpush=4" {
		t.Fatalf("String() = %q", got)
	}
	for _, bad := range []string{"apns", "apns=0", "apns=x", "apns=4/never", "=4"} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	ls := newLanes(limits, Limit{Concurrency: 64, Timeout: 10 * time.Second}, 0)
	if l := ls.get("fcm"); cap(l.sem) != 32 || l.timeout != 10*time.Second {
		t.Fatalf("fcm lane %d %s", cap(l.sem), l.timeout)
	}
	if l := ls.get("log"); cap(l.sem) != 64 {
		t.Fatalf("default lane %d", cap(l.sem))
	}
}
