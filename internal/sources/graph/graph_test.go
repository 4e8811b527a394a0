package graph

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

const (
	secret   = "secretClientValue"
	tenantID = "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f"
	aliceID  = "8ee44408-0679-472c-bc2a-692812af3437"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	return testfs.Read(t, filepath.Join("testdata", name))
}

func directory(t testing.TB) *StaticDirectory {
	t.Helper()
	d, err := LoadDirectoryFile(filepath.Join("testdata", "directory.json"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newTestSource(t testing.TB, mutate func(*Config)) *Source {
	t.Helper()
	cfg := Config{ClientStates: []string{"previous-secret", secret}, Users: directory(t), Metrics: prometheus.NewRegistry()}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func parseBody(t *testing.T, s *Source, body []byte) ([]sources.Item, error) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/v1/graph", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return s.Parse(r, body)
}

func TestDecodeGolden(t *testing.T) {
	c, err := Decode(readFile(t, "notifications.json"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Value) != 3 {
		t.Fatalf("%d notifications, want 3", len(c.Value))
	}
	n := c.Value[0]
	if n.SubscriptionID != "7f105c7d-2dc5-4530-97cd-4e7ae6534c07" || n.ChangeType != ChangeCreated || n.ClientState != secret ||
		n.TenantID != tenantID || n.ResourceData == nil || n.ResourceData.ODataType != "#Microsoft.Graph.Message" ||
		!strings.HasPrefix(n.ResourceData.ID, "AAMkAGUwNjQ4") || n.ResourceData.ODataEtag == "" {
		t.Fatalf("first notification = %+v", n)
	}
	c, err = Decode(readFile(t, "lifecycle.json"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Value[0].LifecycleEvent != LifecycleReauthorizationRequired || c.Value[1].LifecycleEvent != LifecycleMissed {
		t.Fatalf("lifecycle events %+v", c.Value)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		want       string
	}{
		{"not json", `value=1`, 400, "not valid JSON"},
		{"array", `[{"subscriptionId":"x"}]`, 400, "JSON object"},
		{"no value", `{"values":[]}`, 400, `no "value" array`},
		{"null value", `{"value":null}`, 400, `no "value" array`},
		{"value not array", `{"value":{}}`, 400, "not a change notification collection"},
		{"wrong type", `{"value":[{"clientState":5}]}`, 400, "not a change notification collection"},
		{"too many", `{"value":[{},{},{}]}`, 413, "3 notifications"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body), 2)
			var se *httpjson.Error
			if !errors.As(err, &se) || se.Status != tt.status || !strings.Contains(se.Message, tt.want) {
				t.Fatalf("error %v, want %d saying %q", err, tt.status, tt.want)
			}
		})
	}
}

func TestParseResource(t *testing.T) {
	tests := []struct {
		path string
		want Resource
		err  string
	}{
		{"Users/u1/Messages/m1", Resource{UserID: "u1", MessageID: "m1"}, ""},
		{"users/u1@t1/messages/m1", Resource{UserID: "u1@t1", MessageID: "m1"}, ""},
		{"/users/u1/mailFolders('Inbox')/messages/m1", Resource{UserID: "u1", Folder: "Inbox", MessageID: "m1"}, ""},
		{"users/u1/mailfolders/AQMkAD/messages/m1", Resource{UserID: "u1", Folder: "AQMkAD", MessageID: "m1"}, ""},
		{"Users('u1')/Messages('m=1')", Resource{UserID: "u1", MessageID: "m=1"}, ""},
		{"v1.0/users/u1/messages", Resource{UserID: "u1"}, ""},
		{"users/u1/mailFolders('inbox')/messages", Resource{UserID: "u1", Folder: "inbox"}, ""},
		{"", Resource{}, "non-empty"},
		{"me/messages/m1", Resource{}, "does not start with users"},
		{"users", Resource{}, "does not start with users"},
		{"users('')/messages/m1", Resource{}, "does not start with users"},
		{"users/u1/events/e1", Resource{}, "is not a message"},
		{"users/u1/mailFolders()/messages/m1", Resource{}, "without an id"},
		{"users/u1/messages/m1/attachments/a1", Resource{}, "more after the message"},
		{"users/u 1/messages/m1", Resource{}, "white space"},
		{"users/u1/messages/" + strings.Repeat("m", MaxResourceLen), Resource{}, "at most"},
	}
	for _, tt := range tests {
		got, err := ParseResource(tt.path)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseResource(%q) error %v, want %q", tt.path, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseResource(%q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
	}
}

func TestStaticDirectory(t *testing.T) {
	d := directory(t)
	ctx := context.Background()
	alice := User{Tenant: "fabrikam.com", Address: "alice@fabrikam.com"}
	bob := User{Tenant: "fabrikam.com", Address: "bob@fabrikam.com"}
	tests := []struct {
		tenantID, userID string
		want             User
	}{
		{tenantID, aliceID, alice},
		{tenantID, strings.ToUpper(aliceID), alice},
		{tenantID, aliceID + "@" + tenantID, alice},
		{"", aliceID, User{}},                                                   // alice is bound to her tenant
		{"00000000-0000-0000-0000-000000000000", aliceID, User{}},               // another tenant
		{"", "5d1c7e8a-3b2f-4c6d-9e0a-1f2b3c4d5e6f", bob},                       // bob is not bound
		{tenantID, "5d1c7e8a-3b2f-4c6d-9e0a-1f2b3c4d5e6f@fabrikam.com", User{}}, // only a GUID is stripped
		{tenantID, "nobody", User{}},
	}
	for _, tt := range tests {
		got, err := d.LookupUser(ctx, tt.tenantID, tt.userID)
		if tt.want == (User{}) {
			if !errors.Is(err, ErrUnknownUser) {
				t.Errorf("LookupUser(%q, %q) = %+v, %v; want ErrUnknownUser", tt.tenantID, tt.userID, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("LookupUser(%q, %q) = %+v, %v; want %+v", tt.tenantID, tt.userID, got, err, tt.want)
		}
	}
	good := DirectoryEntry{UserID: "u1", Tenant: "fabrikam.com", Address: "c@fabrikam.com"}
	bad := []struct {
		name string
		edit func(*DirectoryEntry)
		want string
	}{
		{"no id", func(e *DirectoryEntry) { e.UserID = "" }, "user_id"},
		{"bad tenant", func(e *DirectoryEntry) { e.Tenant = "fabrikam" }, "tenant"},
		{"bad address", func(e *DirectoryEntry) { e.Address = "c d" }, "address"},
	}
	for _, tt := range bad {
		e := good
		tt.edit(&e)
		if _, err := NewStaticDirectory([]DirectoryEntry{e}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v", tt.name, err)
		}
	}
	if _, err := NewStaticDirectory([]DirectoryEntry{good, good}); err == nil {
		t.Error("duplicate accepted")
	}
	typo := testfs.Write(t, t.TempDir(), "typo.json", `{"users":[{"user":"u1","tenant":"fabrikam.com","address":"c@fabrikam.com"}]}`)
	if _, err := LoadDirectoryFile(typo); err == nil {
		t.Error("unknown field accepted")
	}
}

func TestSourceParseGolden(t *testing.T) {
	s := newTestSource(t, nil)
	items, err := parseBody(t, s, readFile(t, "notifications.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind events.Kind
		user string
	}{
		{events.KindNew, "alice@fabrikam.com"},
		{events.KindFlags, "alice@fabrikam.com"},
		{events.KindDeleted, "bob@fabrikam.com"},
	}
	if len(items) != len(want) {
		t.Fatalf("%d items, want %d", len(items), len(want))
	}
	ids := map[string]bool{}
	for i, it := range items {
		e := it.Event
		if it.Err != nil || e.Kind != want[i].kind || e.User != want[i].user || e.Tenant != "fabrikam.com" || e.Mailbox != events.Inbox || e.Source != events.SourceGraph {
			t.Errorf("item %d = %+v (%v)", i, e, it.Err)
		}
		if !strings.HasPrefix(e.ChangeID, "graph:") || len(e.ChangeID) > events.MaxChangeIDLen || ids[e.ChangeID] {
			t.Errorf("item %d change id %q", i, e.ChangeID)
		}
		ids[e.ChangeID] = true
		// ingest stamps the time and validates.
		e.OccurredAt = time.Now()
		e.Normalize()
		if err := e.Validate(); err != nil {
			t.Errorf("item %d: %v", i, err)
		}
	}
	again, err := parseBody(t, s, readFile(t, "notifications.json"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range items {
		if again[i].Event.ChangeID != items[i].Event.ChangeID {
			t.Fatalf("a retry changed change id %d", i)
		}
	}
	if n := testutil.ToFloat64(s.metrics.notifications.WithLabelValues(resultAccepted)); n != 6 {
		t.Fatalf("accepted = %v, want 6", n)
	}
}

// notificationJSON is one change notification for alice.
func notificationJSON(clientState, changeType, resource string) string {
	return `{"subscriptionId":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","clientState":"` + clientState + `","changeType":"` + changeType +
		`","resource":"` + resource + `","tenantId":"` + tenantID + `","resourceData":{"@odata.type":"#Microsoft.Graph.Message","id":"m1"}}`
}

func TestSourceParseDrops(t *testing.T) {
	good := notificationJSON(secret, "created", "Users/"+aliceID+"/Messages/m1")
	tests := []struct {
		name    string
		body    string
		items   int
		result  string // the counted result of the second notification
		mailbox string
	}{
		{"wrong clientState", `{"value":[` + good + `,` + notificationJSON("guess", "created", "Users/"+aliceID+"/Messages/m2") + `]}`, 1, resultBadClientState, ""},
		{"old secret", `{"value":[` + good + `,` + notificationJSON("previous-secret", "created", "Users/"+aliceID+"/Messages/m2") + `]}`, 2, resultAccepted, ""},
		{"change type", `{"value":[` + good + `,` + notificationJSON(secret, "moved", "Users/"+aliceID+"/Messages/m2") + `]}`, 1, resultChangeType, ""},
		{"event resource", `{"value":[` + good + `,` + notificationJSON(secret, "created", "Users/"+aliceID+"/Events/e1") + `]}`, 1, resultResource, ""},
		{"unknown user", `{"value":[` + good + `,` + notificationJSON(secret, "created", "Users/nobody/Messages/m2") + `]}`, 1, resultUnknownUser, ""},
		{"no subscription", `{"value":[` + good + `,` + strings.Replace(good, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07", "", 1) + `]}`, 1, resultBadSubscription, ""},
		{"sent items", `{"value":[` + good + `,` + notificationJSON(secret, "created", "Users/"+aliceID+"/mailFolders('SentItems')/Messages/m2") + `]}`, 2, resultAccepted, "SentItems"},
		{"inbox by name", `{"value":[` + good + `,` + notificationJSON(secret, "created", "users/"+aliceID+"/mailFolders('inbox')/messages/m2") + `]}`, 2, resultAccepted, events.Inbox},
		{"empty batch", `{"value":[]}`, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSource(t, nil)
			items, err := parseBody(t, s, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if len(items) != tt.items {
				t.Fatalf("%d items, want %d", len(items), tt.items)
			}
			if tt.result == "" {
				return
			}
			want := 1.0
			if tt.result == resultAccepted {
				want = 2
			}
			if n := testutil.ToFloat64(s.metrics.notifications.WithLabelValues(tt.result)); n != want {
				t.Fatalf("%s = %v, want %v", tt.result, n, want)
			}
			if tt.mailbox != "" && items[1].Event.Mailbox != tt.mailbox {
				t.Fatalf("mailbox %q, want %q", items[1].Event.Mailbox, tt.mailbox)
			}
		})
	}
}

func TestSourceParseRefuses(t *testing.T) {
	brokenDir := func(c *Config) { c.Users = brokenDirectory{} }
	tests := []struct {
		name   string
		config func(*Config)
		body   string
		status int
	}{
		{"no clientState matches", nil, `{"value":[` + notificationJSON("guess", "created", "Users/"+aliceID+"/Messages/m1") + `]}`, 401},
		{"no clientState at all", nil, `{"value":[{"subscriptionId":"s","changeType":"created"}]}`, 401},
		{"malformed", nil, `{"value":`, 400},
		{"directory down", brokenDir, `{"value":[` + notificationJSON(secret, "created", "Users/"+aliceID+"/Messages/m1") + `]}`, 503},
		{"clientState of another tenant", func(c *Config) { c.ClientStates = []string{"contoso.com|example.org:" + secret} },
			`{"value":[` + notificationJSON(secret, "created", "Users/"+aliceID+"/Messages/m1") + `]}`, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseBody(t, newTestSource(t, tt.config), []byte(tt.body))
			var se *httpjson.Error
			if !errors.As(err, &se) || se.Status != tt.status {
				t.Fatalf("error %v, want status %d", err, tt.status)
			}
		})
	}
}

type brokenDirectory struct{}

func (brokenDirectory) LookupUser(context.Context, string, string) (User, error) {
	return User{}, errors.New("directory down")
}

func TestChangeIDs(t *testing.T) {
	base := Notification{SubscriptionID: "s1", ChangeType: ChangeUpdated, Resource: "Users/u/Messages/m", ResourceData: &ResourceData{ID: "m", ODataEtag: `W/"1"`}}
	other := base
	other.ResourceData = &ResourceData{ID: "m", ODataEtag: `W/"2"`}
	if changeID(&base) == changeID(&other) {
		t.Fatal("two updates of a message share a change id")
	}
	created, recreated := base, other
	created.ChangeType, recreated.ChangeType = ChangeCreated, ChangeCreated
	if changeID(&created) != changeID(&recreated) {
		t.Fatal("the etag changed the id of a creation")
	}
	if changeID(&created) == changeID(&base) {
		t.Fatal("creation and update share a change id")
	}
}

func TestLifecycle(t *testing.T) {
	var got []Lifecycle
	s := newTestSource(t, func(c *Config) {
		c.OnLifecycle = func(_ context.Context, l Lifecycle) { got = append(got, l) }
	})
	body := strings.Replace(string(readFile(t, "lifecycle.json")), `"clientState": "secretClientValue",
      "lifecycleEvent": "missed"`, `"clientState": "forged",
      "lifecycleEvent": "subscriptionRemoved"`, 1)
	body = strings.Replace(body, `]`, `,{"subscriptionId":"s3","clientState":"secretClientValue","lifecycleEvent":"missed"}]`, 1)
	items, err := parseBody(t, s, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 0 {
		t.Fatalf("lifecycle notifications became %d events", len(items))
	}
	want := []Lifecycle{
		{Event: LifecycleReauthorizationRequired, SubscriptionID: "7f105c7d-2dc5-4530-97cd-4e7ae6534c07", TenantID: tenantID, Expires: time.Date(2024, 5, 16, 11, 0, 0, 0, time.UTC)},
		{Event: LifecycleMissed, SubscriptionID: "s3"},
	}
	if len(got) != len(want) {
		t.Fatalf("reported %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Event != want[i].Event || got[i].SubscriptionID != want[i].SubscriptionID || got[i].TenantID != want[i].TenantID || !got[i].Expires.Equal(want[i].Expires) {
			t.Errorf("reported %+v, want %+v", got[i], want[i])
		}
	}
	for _, c := range []struct {
		event string
		want  float64
	}{{LifecycleReauthorizationRequired, 1}, {LifecycleMissed, 1}, {LifecycleSubscriptionRemoved, 0}} {
		if n := testutil.ToFloat64(s.metrics.lifecycle.WithLabelValues(c.event)); n != c.want {
			t.Errorf("lifecycle %s = %v, want %v", c.event, n, c.want)
		}
	}
	if n := testutil.ToFloat64(s.metrics.notifications.WithLabelValues(resultBadClientState)); n != 1 {
		t.Errorf("forged lifecycle notification not counted")
	}
}

// readRequest reads a raw HTTP request from testdata.
func readRequest(t *testing.T, name string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(readFile(t, name))))
	if err != nil {
		t.Fatal(err)
	}
	return httptest.NewRequest(r.Method, r.URL.String(), r.Body)
}

func TestHandshake(t *testing.T) {
	const token = "Validation: Testing client application reachability for subscription Request-Id: 2f3a1c5e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"
	passed := false
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { passed = true; w.WriteHeader(http.StatusTeapot) })
	tests := []struct {
		name   string
		key    string
		target string
		status int
		body   string
		passed bool
	}{
		{name: "golden", target: "", status: 200, body: token},
		{name: "markup is echoed as text", target: "/v1/graph?validationToken=%3Cb%3Ehi%3C%2Fb%3E", status: 200, body: "<b>hi</b>"},
		{name: "unicode", target: "/v1/graph?validationToken=caf%C3%A9", status: 200, body: "café"},
		{name: "empty", target: "/v1/graph?validationToken=", status: 400},
		{name: "newline", target: "/v1/graph?validationToken=a%0Ab", status: 400},
		{name: "not utf-8", target: "/v1/graph?validationToken=%FF", status: 400},
		{name: "too long", target: "/v1/graph?validationToken=" + strings.Repeat("a", MaxValidationToken+1), status: 400},
		{name: "wrong key", key: "k", target: "/v1/graph?validationToken=abc&key=x", status: 401},
		{name: "right key", key: "k", target: "/v1/graph?validationToken=abc&key=k", status: 200, body: "abc"},
		{name: "notification", target: "/v1/graph", status: http.StatusTeapot, passed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			passed = false
			s := newTestSource(t, func(c *Config) { c.Key = tt.key })
			var r *http.Request
			if tt.target == "" {
				r = readRequest(t, "validation.http")
			} else {
				r = httptest.NewRequest(http.MethodPost, tt.target, nil)
			}
			w := httptest.NewRecorder()
			s.Handshake(next).ServeHTTP(w, r)
			if w.Code != tt.status || passed != tt.passed {
				t.Fatalf("status %d (passed %v), want %d (%v): %s", w.Code, passed, tt.status, tt.passed, w.Body)
			}
			if tt.status != 200 {
				return
			}
			if w.Body.String() != tt.body {
				t.Fatalf("body %q, want %q", w.Body, tt.body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" || w.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("headers %v", w.Header())
			}
		})
	}
}

func TestNewSourceChecksConfig(t *testing.T) {
	if _, err := NewSource(Config{ClientStates: []string{secret}}); err == nil {
		t.Error("no directory accepted")
	}
	if _, err := NewSource(Config{ClientStates: []string{""}, Users: directory(t)}); err == nil {
		t.Error("no clientState accepted")
	}
	reg := prometheus.NewRegistry()
	cfg := Config{ClientStates: []string{secret}, Users: directory(t), Metrics: reg}
	if _, err := NewSource(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSource(cfg); err == nil {
		t.Error("registering the metrics twice on one registry did not fail")
	}
}

func TestRespond(t *testing.T) {
	w := httptest.NewRecorder()
	newTestSource(t, nil).Respond(w, httptest.NewRequest(http.MethodPost, "/v1/graph", nil))
	if w.Code != http.StatusAccepted || w.Body.Len() != 0 {
		t.Fatalf("answer %d %q, want 202 without a body", w.Code, w.Body)
	}
}

func TestFlags(t *testing.T) {
	stateFile := testfs.Write(t, t.TempDir(), "states", "next-secret\n\n")
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	s := Flags(fs)
	if s.Enabled() {
		t.Fatal("enabled without a directory")
	}
	if err := fs.Parse([]string{"--graph-users", "testdata/directory.json", "--graph-client-state", "a,b", "--graph-client-state-file", stateFile, "--graph-key", "k"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Enabled() || strings.Join(cfg.ClientStates, " ") != "a b next-secret" || cfg.Key != "k" || cfg.Users.(*StaticDirectory).Len() != 2 {
		t.Fatalf("config %+v", cfg)
	}
	if _, err := NewSource(cfg); err != nil {
		t.Fatal(err)
	}
}

// TestClientStateBoundToTenants reports for alice@fabrikam.com with a
// clientState bound to fabrikam.com: accepted; a secret with a colon but
// no tenants before it stays one secret for any tenant.
func TestClientStateBoundToTenants(t *testing.T) {
	body := []byte(`{"value":[` + notificationJSON(secret, "created", "Users/"+aliceID+"/Messages/m1") + `]}`)
	for _, states := range [][]string{{"fabrikam.com:" + secret}, {"Contoso.com|fabrikam.com.:" + secret}} {
		items, err := parseBody(t, newTestSource(t, func(c *Config) { c.ClientStates = states }), body)
		if err != nil || len(items) != 1 || items[0].Event.Tenant != "fabrikam.com" {
			t.Fatalf("%v: items %+v, err %v", states, items, err)
		}
	}
	colon := "not a tenant:" + secret
	items, err := parseBody(t, newTestSource(t, func(c *Config) { c.ClientStates = []string{colon} }),
		[]byte(`{"value":[`+notificationJSON(colon, "created", "Users/"+aliceID+"/Messages/m1")+`]}`))
	if err != nil || len(items) != 1 {
		t.Fatalf("a secret with a colon: items %+v, err %v", items, err)
	}
}
