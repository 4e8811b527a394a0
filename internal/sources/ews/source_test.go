package ews

import (
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

func newTestSource(t testing.TB, mutate func(*Config)) *Source {
	t.Helper()
	reg, err := NewStaticRegistry([]RegistryEntry{{SubscriptionID: subID, Tenant: alice.Tenant, User: alice.User, InboxFolderID: inboxID}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Subscriptions: reg}
	if mutate != nil {
		mutate(&cfg)
	}
	src, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// exchangeRequest runs body through a wrapped Parse and Respond, as ingest
// does when every event is stored.
func exchangeRequest(t *testing.T, src *Source, contentType string, body []byte) ([]sources.Item, *httptest.ResponseRecorder, error) {
	t.Helper()
	var (
		items []sources.Item
		err   error
	)
	h := src.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if items, err = src.Parse(r, body); err == nil {
			src.Respond(w, r)
		}
	}))
	r := httptest.NewRequest(http.MethodPost, "/v1/ews", strings.NewReader(string(body)))
	r.Header.Set("Content-Type", contentType)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return items, w, err
}

func TestSourceParse(t *testing.T) {
	unknown := strings.ReplaceAll(string(readFile(t, "sendnotification_newmail.xml")), subID, "SomeoneElse")
	tests := []struct {
		name      string
		body      string
		ct        string
		items     int
		status    Status
		errStatus int
	}{
		{name: "new mail", body: string(readFile(t, "sendnotification_newmail.xml")), items: 2, status: StatusOK},
		{name: "heartbeat", body: string(readFile(t, "sendnotification_status.xml")), status: StatusOK},
		{name: "error message", body: string(readFile(t, "sendnotification_error.xml")), status: StatusOK},
		{name: "unknown", body: unknown, status: StatusUnsubscribe},
		{name: "one known of two", body: strings.Replace(unknown, "</m:ResponseMessages>", extractMessage(t, "sendnotification_status.xml")+"</m:ResponseMessages>", 1), status: StatusOK},
		{name: "malformed", body: "<x/>", errStatus: http.StatusBadRequest},
		{name: "utf-16", ct: "text/xml; charset=utf-16", body: string(readFile(t, "sendnotification_status.xml")), errStatus: http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := tt.ct
			if ct == "" {
				ct = ContentType
			}
			items, w, err := exchangeRequest(t, newTestSource(t, nil), ct, []byte(tt.body))
			if tt.errStatus != 0 {
				var se *httpjson.Error
				if !errors.As(err, &se) || se.Status != tt.errStatus {
					t.Fatalf("error %v, want a %d httpjson.Error", err, tt.errStatus)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(items) != tt.items {
				t.Fatalf("%d items, want %d", len(items), tt.items)
			}
			if want := string(ResultEnvelope(tt.status)); w.Body.String() != want {
				t.Fatalf("answer:\n%s\nwant:\n%s", w.Body, want)
			}
		})
	}
}

// extractMessage returns the SendNotificationResponseMessage of a golden file.
func extractMessage(t *testing.T, name string) string {
	t.Helper()
	s := string(readFile(t, name))
	i := strings.Index(s, "<m:SendNotificationResponseMessage")
	j := strings.Index(s, "</m:SendNotificationResponseMessage>")
	return s[i : j+len("</m:SendNotificationResponseMessage>")]
}

func TestSourceParseNeedsWrap(t *testing.T) {
	src := newTestSource(t, nil)
	r := httptest.NewRequest(http.MethodPost, "/v1/ews", nil)
	_, err := src.Parse(r, readFile(t, "sendnotification_status.xml"))
	var se *httpjson.Error
	if !errors.As(err, &se) || se.Status != http.StatusInternalServerError || !strings.Contains(se.Message, "Wrap") {
		t.Fatalf("Parse without Wrap: %v", err)
	}
}

func TestSourceReportsSubscriptionErrors(t *testing.T) {
	var got []SubscriptionError
	metrics := prometheus.NewRegistry()
	src := newTestSource(t, func(c *Config) {
		c.Metrics = metrics
		c.OnSubscriptionError = func(_ context.Context, e SubscriptionError) { got = append(got, e) }
	})
	if _, _, err := exchangeRequest(t, src, ContentType, readFile(t, "sendnotification_error.xml")); err != nil {
		t.Fatal(err)
	}
	want := SubscriptionError{SubscriptionID: subID, Subscription: alice, Known: true, ResponseCode: "ErrorReadEventsFailed",
		MessageText: "Events couldn't be read for this subscription. The subscription needs to be recreated."}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("reported %+v, want %+v", got, want)
	}
	if n := testutil.ToFloat64(src.metrics.subscriptionErrors.WithLabelValues("ErrorReadEventsFailed")); n != 1 {
		t.Fatalf("subscription error metric = %v", n)
	}
	if n, err := testutil.GatherAndCount(metrics, "pushproxy_ews_subscription_errors_total"); err != nil || n != 1 {
		t.Fatalf("registered series: %d, %v", n, err)
	}
}

func TestSourceAuthenticate(t *testing.T) {
	open := newTestSource(t, nil)
	keyed := newTestSource(t, func(c *Config) { c.Key = "s3cret" })
	tests := []struct {
		src    *Source
		target string
		want   bool
	}{
		{open, "/v1/ews", true},
		{keyed, "/v1/ews", false},
		{keyed, "/v1/ews?key=guess", false},
		{keyed, "/v1/ews?key=s3cret", true},
		{keyed, "/v1/ews?other=1&key=s3cret", true},
	}
	for _, tt := range tests {
		if got := tt.src.Authenticate(httptest.NewRequest(http.MethodPost, tt.target, nil)); got != tt.want {
			t.Errorf("Authenticate(%s) = %v, want %v", tt.target, got, tt.want)
		}
	}
	if !strings.Contains(keyed.Challenge(), KeyParam) {
		t.Fatalf("challenge %q does not name the parameter", keyed.Challenge())
	}
}

// Wrap turns ingest's JSON errors into SOAP faults and leaves the rest alone.
func TestWrapWritesFaults(t *testing.T) {
	src := newTestSource(t, nil)
	tests := []struct {
		name       string
		inner      http.HandlerFunc
		status     int
		code       string
		reason     string
		retryAfter string
	}{
		{"json error", func(w http.ResponseWriter, _ *http.Request) {
			httpjson.WriteError(w, &httpjson.Error{Status: 422, Code: "invalid_event", Message: "1 of 2 events are invalid"})
		}, 422, FaultClient, "1 of 2 events are invalid", ""},
		{"unavailable", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "5")
			httpjson.WriteError(w, &httpjson.Error{Status: 503, Code: "unavailable", Message: "retry later"})
		}, 503, FaultServer, "retry later", "5"},
		{"unavailable without Retry-After", func(w http.ResponseWriter, _ *http.Request) {
			httpjson.WriteError(w, &httpjson.Error{Status: 503, Code: "unavailable", Message: "registry down"})
		}, 503, FaultServer, "registry down", "30"},
		{"plain text error", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "nope", http.StatusNotFound)
		}, 404, FaultClient, "Not Found", ""},
		{"success", func(w http.ResponseWriter, _ *http.Request) {
			writeSOAP(w, http.StatusOK, ResultEnvelope(StatusOK))
		}, 200, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			src.Wrap(tt.inner).ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/ews", nil))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if ct := w.Header().Get("Content-Type"); ct != ContentType {
				t.Fatalf("Content-Type %q", ct)
			}
			if tt.code == "" {
				if w.Body.String() != string(ResultEnvelope(StatusOK)) {
					t.Fatalf("success changed: %s", w.Body)
				}
				return
			}
			if want := string(FaultEnvelope(tt.code, tt.reason)); w.Body.String() != want {
				t.Fatalf("answer:\n%s\nwant:\n%s", w.Body, want)
			}
			if got := w.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tt.retryAfter)
			}
		})
	}
}

func TestNewSourceNeedsRegistry(t *testing.T) {
	if _, err := NewSource(Config{}); err == nil {
		t.Fatal("no registry accepted")
	}
	reg := prometheus.NewRegistry()
	cfg := Config{Subscriptions: &StaticRegistry{}, Metrics: reg}
	if _, err := NewSource(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSource(cfg); err == nil {
		t.Fatal("registering the metrics twice on one registry did not fail")
	}
}

func TestFlags(t *testing.T) {
	keyFile := testfs.Write(t, t.TempDir(), "key", "from-file\n")
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	s := Flags(fs)
	if s.Enabled() {
		t.Fatal("enabled without a registry")
	}
	if err := fs.Parse([]string{"--ews-subscriptions", "testdata/registry.json", "--ews-key-file", keyFile}); err != nil {
		t.Fatal(err)
	}
	cfg, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Enabled() || cfg.Key != "from-file" || cfg.Subscriptions.(*StaticRegistry).Len() != 1 {
		t.Fatalf("config %+v", cfg)
	}
	s.SubscriptionsFile = "testdata/missing.json"
	if _, err := s.Config(); err == nil {
		t.Fatal("missing registry accepted")
	}
}
