package relayclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

func TestPublishSendsProtocolAndReturnsDeviceResults(t *testing.T) {
	relay := newTestRelay(t, func(_ int, w http.ResponseWriter, _ *http.Request, req relayproto.Request) {
		writeJSON(w, http.StatusOK, relayproto.Response{Results: []relayproto.NotificationResult{
			{ID: req.Notifications[0].ID, Devices: []relayproto.DeviceResult{{AppID: "app", DeviceID: "device-a", Status: relayproto.DeviceDelivered}}},
			{ID: req.Notifications[1].ID, Devices: []relayproto.DeviceResult{{AppID: "app", DeviceID: "device-b", Status: relayproto.DeviceGone, Reason: "Unregistered"}}},
		}})
	})
	tests := []struct {
		name      string
		userAgent string
		wantUA    string
		uri       string
	}{
		{"default user agent", "", "pushproxy/", relay.uri()},
		{"custom user agent, trailing slash", "pushproxy/1.2.3", "pushproxy/1.2.3", relay.uri() + "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{Tokens: staticTokens{token: "tok-123"}, UserAgent: tt.userAgent})
			batch := batchOf(2)
			resp, err := c.Publish(t.Context(), tt.uri, batch)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Results) != 2 || resp.Results[1].Devices[0].Status != relayproto.DeviceGone || resp.Results[1].Devices[0].Reason != "Unregistered" {
				t.Fatalf("results %+v", resp.Results)
			}
			got := relay.requests()
			r := got[len(got)-1]
			if h := r.header.Get("Authorization"); h != "Bearer tok-123" {
				t.Errorf("Authorization %q", h)
			}
			if h := r.header.Get("Content-Type"); h != "application/json" {
				t.Errorf("Content-Type %q", h)
			}
			if h := r.header.Get("return-client-request-id"); h != "True" {
				t.Errorf("return-client-request-id %q", h)
			}
			if _, err := uuid.Parse(r.header.Get("client-request-id")); err != nil {
				t.Errorf("client-request-id %q: %v", r.header.Get("client-request-id"), err)
			}
			if ua := r.header.Get("User-Agent"); !strings.HasPrefix(ua, tt.wantUA) {
				t.Errorf("User-Agent %q, want prefix %q", ua, tt.wantUA)
			}
			if !reflect.DeepEqual(r.body.Notifications, batch) {
				t.Errorf("body %+v\nwant %+v", r.body.Notifications, batch)
			}
		})
	}
	reqs := relay.requests()
	if reqs[0].header.Get("client-request-id") == reqs[1].header.Get("client-request-id") {
		t.Error("client-request-id repeated between requests")
	}
}

func TestDefaultClientUsesHTTP2AndReusesConnections(t *testing.T) {
	var conns atomic.Int32
	tr, hc := newTLSRelay(t, DefaultTimeout, func(srv *httptest.Server) {
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
	})
	c := New(Config{Tokens: staticTokens{token: "t"}, HTTPClient: hc})
	for range 3 {
		if _, err := c.Publish(t.Context(), tr.uri(), batchOf(1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range tr.requests() {
		if r.proto != 2 {
			t.Errorf("request over HTTP/%d, want HTTP/2", r.proto)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 3 requests, want 1", n)
	}
}

func TestPublishFailures(t *testing.T) {
	challenge := `Bearer client_id="00000004-0000-0ff1-ce00-000000000000", trusted_issuers="00000004-0000-0ff1-ce00-000000000000@*"`
	tests := []struct {
		name          string
		answer        func(w http.ResponseWriter)
		uriSuffix     string
		wantClass     Class
		wantStatus    int
		wantTemporary bool
		wantIs        []error
		wantRetry     time.Duration
		wantInError   []string
		wantProbe     Class
		wantInMessage []string
	}{
		{
			name: "401 with challenge",
			answer: func(w http.ResponseWriter) {
				w.Header().Set("WWW-Authenticate", challenge)
				writeFault(w, http.StatusUnauthorized, relayproto.Fault{Message: "token signed with an unregistered certificate"})
			},
			wantClass: ClassAuthentication, wantStatus: 401, wantIs: []error{ErrUnauthorized, ErrPermanent},
			wantInError: []string{challenge, "unregistered certificate"},
			wantProbe:   ClassAuthentication, wantInMessage: []string{"it was not possible to authenticate", challenge, "pushctl relay partner add", "clocks"},
		},
		{
			name:      "403",
			answer:    fault(http.StatusForbidden, relayproto.Fault{Message: "organization disabled"}),
			wantClass: ClassAuthentication, wantStatus: 403, wantIs: []error{ErrUnauthorized, ErrPermanent},
			wantProbe: ClassAuthentication, wantInMessage: []string{"refused access", "organization disabled"},
		},
		{
			name:      "404 service URI not found",
			answer:    status(http.StatusOK), // never reached: the path is wrong
			uriSuffix: "/Wrong",
			wantClass: ClassPushNotifications, wantStatus: 404, wantIs: []error{ErrPermanent},
			wantProbe: ClassPushNotifications, wantInMessage: []string{"the service URI", "could not be found", "/Wrong/service.svc/PublishOnPremNotifications"},
		},
		{
			name:      "400 configuration fault",
			answer:    fault(http.StatusBadRequest, relayproto.Fault{Message: "batch too large", CanRetry: false}),
			wantClass: ClassPushNotifications, wantStatus: 400, wantIs: []error{ErrPermanent},
			wantProbe: ClassPushNotifications, wantInMessage: []string{"refused the request", "batch too large", "client-request-id"},
		},
		{
			name:      "503 without body",
			answer:    status(http.StatusServiceUnavailable),
			wantClass: ClassServer, wantStatus: 503, wantTemporary: true,
			wantProbe: ClassUnknown, wantInMessage: []string{"failed", "503"},
		},
		{
			name:      "503 with CanRetry false",
			answer:    fault(http.StatusServiceUnavailable, relayproto.Fault{Message: "organization suspended", CanRetry: false}),
			wantClass: ClassServer, wantStatus: 503, wantIs: []error{ErrPermanent},
			wantProbe: ClassUnknown, wantInMessage: []string{"organization suspended"},
		},
		{
			name: "500 fault without CanRetry is retryable",
			answer: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = w.Write([]byte(`{"Message":"boom"}`))
			},
			wantClass: ClassServer, wantStatus: 500, wantTemporary: true,
			wantProbe: ClassUnknown,
		},
		{
			name: "429 with Retry-After and larger fault back-off",
			answer: func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "2")
				writeFault(w, http.StatusTooManyRequests, relayproto.Fault{Message: "slow down", CanRetry: true, BackOffTimeInMilliseconds: 3000})
			},
			wantClass: ClassThrottled, wantStatus: 429, wantTemporary: true, wantRetry: 3 * time.Second,
			wantProbe: ClassUnknown, wantInMessage: []string{"throttling", "3s"},
		},
		{
			name:      "fault back-off capped at one hour",
			answer:    fault(http.StatusServiceUnavailable, relayproto.Fault{Message: "maintenance", CanRetry: true, BackOffTimeInMilliseconds: int64(3 * time.Hour / time.Millisecond)}),
			wantClass: ClassServer, wantStatus: 503, wantTemporary: true, wantRetry: relayproto.MaxBackOff,
			wantProbe: ClassUnknown,
		},
		{
			name: "redirect",
			answer: func(w http.ResponseWriter) {
				w.Header().Set("Location", "https://elsewhere.example/PushNotifications")
				w.WriteHeader(http.StatusMovedPermanently)
			},
			wantClass: ClassPushNotifications, wantStatus: 301, wantIs: []error{ErrPermanent},
			wantProbe: ClassPushNotifications, wantInMessage: []string{"redirects", "elsewhere.example"},
		},
		{
			name: "200 that is not a publish response",
			answer: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "text/html")
				_, _ = w.Write([]byte("<html>welcome</html>"))
			},
			wantClass: ClassPushNotifications, wantStatus: 200, wantIs: []error{ErrPermanent},
			wantProbe: ClassPushNotifications, wantInMessage: []string{"did not answer like a push notification relay"},
		},
		{
			name: "200 larger than the bound",
			answer: func(w http.ResponseWriter) {
				_, _ = w.Write([]byte(`{"results":[` + strings.Repeat(`{"id":"x"},`, MaxResponseSize/10) + `{"id":"x"}]}`))
			},
			wantClass: ClassPushNotifications, wantStatus: 200, wantIs: []error{ErrPermanent},
			wantInError: []string{"larger than"},
			wantProbe:   ClassPushNotifications,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			relay := newTestRelay(t, always(tt.answer))
			c := New(Config{Tokens: staticTokens{token: "t"}})
			uri := relay.uri() + tt.uriSuffix
			_, err := c.Publish(t.Context(), uri, batchOf(1))
			e := asError(t, err)
			if e.Class != tt.wantClass || e.Status != tt.wantStatus || e.Temporary() != tt.wantTemporary {
				t.Errorf("class %s status %d temporary %t, want %s %d %t (%v)", e.Class, e.Status, e.Temporary(), tt.wantClass, tt.wantStatus, tt.wantTemporary, err)
			}
			if e.URI != uri {
				t.Errorf("URI %q", e.URI)
			}
			if tt.wantStatus != 404 {
				if _, perr := uuid.Parse(e.RequestID); perr != nil {
					t.Errorf("RequestID %q is not a UUID", e.RequestID)
				}
			}
			if e.RetryAfter != tt.wantRetry {
				t.Errorf("RetryAfter %s, want %s", e.RetryAfter, tt.wantRetry)
			}
			for _, target := range tt.wantIs {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(err, %v) = false", target)
				}
			}
			if errors.Is(err, ErrPermanent) == tt.wantTemporary {
				t.Errorf("errors.Is(err, ErrPermanent) disagrees with Temporary")
			}
			for _, s := range tt.wantInError {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			class, msg := Classify(err)
			if class != tt.wantProbe {
				t.Errorf("Classify class %s, want %s (%s)", class, tt.wantProbe, msg)
			}
			for _, s := range tt.wantInMessage {
				if !strings.Contains(msg, s) {
					t.Errorf("Classify message %q lacks %q", msg, s)
				}
			}
		})
	}
}

func TestPublishUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	uri := "http://" + addr + basePath
	c := New(Config{Tokens: staticTokens{token: "t"}})
	_, err = c.Publish(t.Context(), uri, batchOf(1))
	e := asError(t, err)
	if e.Class != ClassNetworking || !e.Temporary() || !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrPermanent) {
		t.Fatalf("class %s temporary %t: %v", e.Class, e.Temporary(), err)
	}
	class, msg := Classify(err)
	if class != ClassNetworking || !strings.Contains(msg, "a connection to the push notification service at "+uri+" could not be established") {
		t.Fatalf("Classify: %s %q", class, msg)
	}
}

func TestPublishAttemptTimeout(t *testing.T) {
	relay := newTestRelay(t, func(_ int, _ http.ResponseWriter, r *http.Request, _ relayproto.Request) {
		<-r.Context().Done()
	})
	c := New(Config{Tokens: staticTokens{token: "t"}, Timeout: 100 * time.Millisecond})
	_, err := c.Publish(t.Context(), relay.uri(), batchOf(1))
	e := asError(t, err)
	if e.Class != ClassNetworking || !e.Temporary() || !strings.Contains(err.Error(), "no answer within 100ms") {
		t.Fatalf("class %s: %v", e.Class, err)
	}
}

func TestPublishRequestProblems(t *testing.T) {
	relay := newTestRelay(t, succeed)
	tests := []struct {
		name      string
		tokens    TokenSource
		uri       string
		batch     []relayproto.Notification
		wantClass Class
		wantProbe Class
		wantInMsg string
	}{
		{"token failure", staticTokens{err: errors.New("certificate expired")}, relay.uri(), batchOf(1), ClassAuthentication, ClassAuthentication, "certificate expired"},
		{"no token source", nil, relay.uri(), batchOf(1), ClassAuthentication, ClassAuthentication, "no S2S token source"},
		{"relative URI", staticTokens{token: "t"}, "/PushNotifications", batchOf(1), ClassPushNotifications, ClassPushNotifications, "is not valid"},
		{"bad scheme", staticTokens{token: "t"}, "ftp://relay/PushNotifications", batchOf(1), ClassPushNotifications, ClassPushNotifications, "is not valid"},
		{"empty batch", staticTokens{token: "t"}, relay.uri(), nil, ClassUnknown, ClassUnknown, "no notifications"},
		{"batch too large", staticTokens{token: "t"}, relay.uri(), make([]relayproto.Notification, relayproto.MaxNotificationsPerRequest+1), ClassUnknown, ClassUnknown, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{Tokens: tt.tokens, BreakerFailures: 1})
			_, err := c.Publish(t.Context(), tt.uri, tt.batch)
			e := asError(t, err)
			if e.Class != tt.wantClass || e.Temporary() {
				t.Errorf("class %s temporary %t, want %s permanent: %v", e.Class, e.Temporary(), tt.wantClass, err)
			}
			class, msg := Classify(err)
			if class != tt.wantProbe || !strings.Contains(msg, tt.wantInMsg) {
				t.Errorf("Classify: %s %q", class, msg)
			}
			if c.State() != BreakerClosed {
				t.Errorf("breaker %s after a request that was never sent", c.State())
			}
		})
	}
	if n := len(relay.requests()); n != 0 {
		t.Errorf("relay got %d requests", n)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"-3", 0},
		{"86400", relayproto.MaxBackOff},
		{"99999999999999999999", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), relayproto.MaxBackOff},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestPublishContextAlreadyDone(t *testing.T) {
	relay := newTestRelay(t, succeed)
	c := New(Config{Tokens: staticTokens{token: "t"}})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.Publish(ctx, relay.uri(), batchOf(1))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if len(relay.requests()) != 0 {
		t.Fatal("request sent with a cancelled context")
	}
}
