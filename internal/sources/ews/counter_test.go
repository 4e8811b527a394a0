package ews

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/sources/sourcestest"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

func newTestCounter(t *testing.T, f *fakeEWS, mutate func(*CounterConfig)) (*Counter, *sleeps) {
	t.Helper()
	s := newSleeps()
	cfg := CounterConfig{Access: Access{URL: f.url(), Tenants: []string{"Fabrikam.com."}, Username: "svc-push@fabrikam.com", Password: "pa55word"},
		Concurrency: 1, Client: f.srv.Client(), Sleep: s.Sleep, Now: s.Now, Metrics: prometheus.NewRegistry()}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := NewCounter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func mailbox(user, name string) sources.Mailbox {
	return sources.Mailbox{Tenant: "fabrikam.com", User: user, Name: name}
}

func TestCounterCounts(t *testing.T) {
	for _, busyAs := range []string{"fault", "message"} {
		t.Run("busy as "+busyAs, func(t *testing.T) {
			f := newFakeEWS(t)
			f.unread = map[string]int{"alice@fabrikam.com": 5, "bob@fabrikam.com": 7, "dan@fabrikam.com": 1}
			f.busy["bob@fabrikam.com"], f.busyAs = 1, busyAs
			f.denied["dan@fabrikam.com"] = true
			c, s := newTestCounter(t, f, nil)
			counts := c.Counts(context.Background(), []sources.Mailbox{
				mailbox("alice@fabrikam.com", events.Inbox),
				mailbox("bob@fabrikam.com", events.Inbox),
				mailbox("mallory@fabrikam.com", events.Inbox), // no such mailbox
				mailbox("dan@fabrikam.com", events.Inbox),     // access denied
				mailbox("alice@fabrikam.com", "SentItems"),
				mailbox("alice@fabrikam.com", "Archive/2020"), // not a distinguished folder
				mailbox("alice", events.Inbox),                // not an SMTP address
				{Tenant: "contoso.com", User: "erin@contoso.com", Name: events.Inbox},
			})
			sourcestest.CheckCounts(t, counts, []sourcestest.Count{
				{Unread: 5},
				{Unread: 7},
				{Err: sources.ErrNotServed, Text: "ErrorNonExistentMailbox"},
				{Text: "EWS answered ErrorAccessDenied: Access is denied."},
				{Unread: 5},
				{Err: sources.ErrNotServed},
				{Err: sources.ErrNotServed},
				{Err: sources.ErrNotServed},
			})
			var re *ResponseError
			if !errors.As(counts[3].Err, &re) || re.Code != "ErrorAccessDenied" {
				t.Errorf("error %v is not a ResponseError", counts[3].Err)
			}
			want := []getFolderCall{
				{mailbox: "alice@fabrikam.com", folder: "inbox", version: RequestServerVersion},
				{mailbox: "bob@fabrikam.com", folder: "inbox", version: RequestServerVersion},
				{mailbox: "bob@fabrikam.com", folder: "inbox", version: RequestServerVersion},
				{mailbox: "mallory@fabrikam.com", folder: "inbox", version: RequestServerVersion},
				{mailbox: "dan@fabrikam.com", folder: "inbox", version: RequestServerVersion},
				{mailbox: "alice@fabrikam.com", folder: "sentitems", version: RequestServerVersion},
			}
			if got := f.received(); !reflect.DeepEqual(got, want) {
				t.Errorf("requests %+v\nwant %+v", got, want)
			}
			if got := s.recorded(); !reflect.DeepEqual(got, []time.Duration{time.Second}) {
				t.Errorf("waits %v, want [1s]", got)
			}
			if n := testutil.ToFloat64(c.metrics.busy); n != 1 {
				t.Errorf("busy = %v, want 1", n)
			}
		})
	}
}

func TestCounterBusy(t *testing.T) {
	alice := []sources.Mailbox{mailbox("alice@fabrikam.com", events.Inbox)}
	tests := []struct {
		name     string
		busyAs   string
		busy     int
		backOff  int
		deadline time.Duration
		waits    []time.Duration
		text     string // of the error; "" when the count is read
	}{
		{"bare 503: doubling default waits", "503", 3, 0, 0, []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second}, ""},
		{"bare 429 with Retry-After", "429", 1, 0, 0, []time.Duration{3 * time.Second}, ""},
		{"out of attempts", "fault", 10, 1000, 0, []time.Duration{time.Second, time.Second, time.Second}, "after 4 attempts: EWS answered ErrorServerBusy"},
		{"back-off longer than the counter waits", "message", 1, 3_600_000, 0, nil, "wait 1h0m0s (at most 5m0s)"},
		{"back-off past the deadline", "fault", 1, 120_000, time.Minute, nil, "past the deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEWS(t)
			f.unread["alice@fabrikam.com"] = 5
			f.busy["alice@fabrikam.com"], f.busyAs, f.backOff = tt.busy, tt.busyAs, tt.backOff
			c, s := newTestCounter(t, f, nil)
			ctx := context.Background()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			counts := c.Counts(ctx, alice)
			if tt.text == "" {
				sourcestest.CheckCounts(t, counts, []sourcestest.Count{{Unread: 5}})
			} else {
				sourcestest.CheckCounts(t, counts, []sourcestest.Count{{Err: ErrServerBusy, Text: tt.text}})
			}
			if got := s.recorded(); !reflect.DeepEqual(got, tt.waits) {
				t.Errorf("waits %v, want %v", got, tt.waits)
			}
		})
	}
}

// TestCounterPausesEveryRequest: after a busy answer for one mailbox the
// requests for the others wait too. The clock stands still, as if bob's
// request came at once after alice's.
func TestCounterPausesEveryRequest(t *testing.T) {
	f := newFakeEWS(t)
	f.unread = map[string]int{"alice@fabrikam.com": 5, "bob@fabrikam.com": 7}
	f.busy["alice@fabrikam.com"] = 1
	stopped := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	c, s := newTestCounter(t, f, func(cfg *CounterConfig) { cfg.Now = func() time.Time { return stopped } })
	counts := c.Counts(context.Background(), []sources.Mailbox{mailbox("alice@fabrikam.com", events.Inbox), mailbox("bob@fabrikam.com", events.Inbox)})
	sourcestest.CheckCounts(t, counts, []sourcestest.Count{{Unread: 5}, {Unread: 7}})
	if got := s.recorded(); !reflect.DeepEqual(got, []time.Duration{time.Second, time.Second}) {
		t.Errorf("waits %v, want [1s 1s]", got)
	}
}

func TestCounterConcurrency(t *testing.T) {
	f := newFakeEWS(t)
	var boxes []sources.Mailbox
	for _, u := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		f.unread[u+"@fabrikam.com"] = len(boxes)
		boxes = append(boxes, mailbox(u+"@fabrikam.com", events.Inbox))
	}
	// The first requests are held until three are in flight at once.
	release := make(chan struct{})
	var once sync.Once
	f.gate = func(inflight int) {
		if inflight == 3 {
			// Later requests may find three in flight again.
			once.Do(func() { close(release) })
		}
		select {
		case <-release:
		case <-time.After(10 * time.Second):
			t.Error("three requests were never in flight at once")
		}
	}
	c, _ := newTestCounter(t, f, func(cfg *CounterConfig) { cfg.Concurrency = 3 })
	counts := c.Counts(context.Background(), boxes)
	for i, n := range counts {
		if n.Err != nil || n.Unread != i {
			t.Fatalf("count %d: %d, %v", i, n.Unread, n.Err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxInflight != 3 {
		t.Fatalf("%d requests in flight at most, want 3", f.maxInflight)
	}
}

func TestCounterCanceled(t *testing.T) {
	f := newFakeEWS(t)
	f.unread["alice@fabrikam.com"], f.busy["alice@fabrikam.com"] = 5, 1
	ctx, cancel := context.WithCancel(context.Background())
	c, _ := newTestCounter(t, f, func(cfg *CounterConfig) {
		cfg.Sleep = func(ctx context.Context, _ time.Duration) error { cancel(); return ctx.Err() }
	})
	boxes := []sources.Mailbox{mailbox("alice@fabrikam.com", events.Inbox), mailbox("bob@fabrikam.com", events.Inbox), mailbox("alice@fabrikam.com", "Archive")}
	sourcestest.CheckCounts(t, c.Counts(ctx, boxes), []sourcestest.Count{{Err: context.Canceled}, {Err: context.Canceled}, {Err: sources.ErrNotServed}})
	if got := len(f.received()); got != 1 {
		t.Errorf("%d requests, want 1", got)
	}
}

// fakeEntra is an Entra token endpoint of one tenant that takes the
// client secret app-s3cret and answers with tokens token-1, token-2, ...
// for the EWS scope.
type fakeEntra struct {
	srv    *httptest.Server
	mu     sync.Mutex
	issued int
}

func newFakeEntra(t *testing.T, tenant string) *fakeEntra {
	e := &fakeEntra{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/"+tenant+"/oauth2/v2.0/token" || r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" ||
			r.PostForm.Get("scope") != tokens.EWSScope || r.PostForm.Get("client_secret") != "app-s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}`))
			return
		}
		e.mu.Lock()
		e.issued++
		token := fmt.Sprintf("token-%d", e.issued)
		e.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": 3599, "access_token": token})
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *fakeEntra) tokens() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.issued
}

func TestCounterOAuth(t *testing.T) {
	const tenant = "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f"
	entra := newFakeEntra(t, tenant)
	src, err := tokens.NewAppTokenSource(tokens.AppTokenOptions{Authority: entra.srv.URL, TenantID: tenant, ClientID: "app", Secret: "app-s3cret",
		Scope: tokens.EWSScope, Client: entra.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeEWS(t)
	f.unread["alice@fabrikam.com"] = 5
	refused := "token-1" // revoked before it expired
	f.authorized = func(r *http.Request) bool {
		h := r.Header.Get("Authorization")
		return strings.HasPrefix(h, "Bearer token-") && h != "Bearer "+refused
	}
	c, _ := newTestCounter(t, f, func(cfg *CounterConfig) { cfg.Tokens, cfg.Username, cfg.Password = src, "", "" })
	alice := []sources.Mailbox{mailbox("alice@fabrikam.com", events.Inbox)}
	sourcestest.CheckCounts(t, c.Counts(context.Background(), alice), []sourcestest.Count{{Unread: 5}})
	if got := f.received(); len(got) != 1 || got[0].impersonated != "alice@fabrikam.com" {
		t.Fatalf("requests %+v: app-only tokens must impersonate", got)
	}
	if n := entra.tokens(); n != 2 {
		t.Fatalf("%d tokens issued, want 2 (the refused one and its successor)", n)
	}
	f.mu.Lock()
	f.authorized = func(*http.Request) bool { return false }
	f.mu.Unlock()
	sourcestest.CheckCounts(t, c.Counts(context.Background(), alice), []sourcestest.Count{{Text: "HTTP 401"}})

	wrong, err := tokens.NewAppTokenSource(tokens.AppTokenOptions{Authority: entra.srv.URL, TenantID: tenant, ClientID: "app", Secret: "wrong",
		Scope: tokens.EWSScope, Client: entra.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	c, _ = newTestCounter(t, f, func(cfg *CounterConfig) { cfg.Tokens, cfg.Username, cfg.Password = wrong, "", "" })
	var te *tokens.TokenError
	if err := c.Counts(context.Background(), alice)[0].Err; !errors.As(err, &te) || te.Code != "invalid_client" {
		t.Fatalf("error %v, want the token endpoint's invalid_client", err)
	}
}

func TestCounterBasicImpersonation(t *testing.T) {
	f := newFakeEWS(t)
	f.unread["alice@fabrikam.com"] = 5
	c, _ := newTestCounter(t, f, func(cfg *CounterConfig) { cfg.Impersonate = true })
	sourcestest.CheckCounts(t, c.Counts(context.Background(), []sources.Mailbox{mailbox("alice@fabrikam.com", events.Inbox)}), []sourcestest.Count{{Unread: 5}})
	c, _ = newTestCounter(t, f, func(cfg *CounterConfig) { cfg.Password = "wrong" })
	sourcestest.CheckCounts(t, c.Counts(context.Background(), []sources.Mailbox{mailbox("alice@fabrikam.com", events.Inbox)}), []sourcestest.Count{{Text: "HTTP 401"}})
	if got := f.received(); len(got) != 1 || got[0].impersonated != "alice@fabrikam.com" {
		t.Fatalf("requests %+v", got)
	}
}

// TestCounterNTLM reads counts from an Exchange that allows only NTLM,
// several requests at once, each handshake on its own connection.
func TestCounterNTLM(t *testing.T) {
	f, srv := newFakeEWSBehindNTLM(t)
	var boxes []sources.Mailbox
	var want []sourcestest.Count
	for i, u := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		f.unread[u+"@fabrikam.com"] = i
		boxes = append(boxes, mailbox(u+"@fabrikam.com", events.Inbox))
		want = append(want, sourcestest.Count{Unread: i})
	}
	ntlmCounter := func(user, password string) *Counter {
		c, _ := newTestCounter(t, f, func(cfg *CounterConfig) {
			cfg.Username, cfg.Password, cfg.NTLM, cfg.Concurrency = user, password, true, 4
		})
		return c
	}
	c := ntlmCounter(`FABRIKAM\svc-push`, "pa55word")
	sourcestest.CheckCounts(t, c.Counts(context.Background(), boxes), want)
	sourcestest.CheckCounts(t, c.Counts(context.Background(), boxes), want)
	got := srv.Counts()
	if got.Basic != 0 || got.Unchallenged != 0 || got.Refused != 0 || got.Handshakes == 0 || got.Handshakes > 4 {
		t.Fatalf("the server saw %+v: want at most one handshake per session, no password in the clear", got)
	}
	c = ntlmCounter(`FABRIKAM\svc-push`, "wrong")
	sourcestest.CheckCounts(t, c.Counts(context.Background(), boxes[:1]), []sourcestest.Count{{Text: "HTTP 401"}})
}

func TestNewCounterChecksConfig(t *testing.T) {
	good := CounterConfig{Access: Access{URL: "https://mail.fabrikam.com/EWS/Exchange.asmx", Username: "svc", Password: "p"}}
	tests := []struct {
		name   string
		mutate func(*CounterConfig)
	}{
		{"no URL", func(c *CounterConfig) { c.URL = "" }},
		{"relative URL", func(c *CounterConfig) { c.URL = "/EWS/Exchange.asmx" }},
		{"no credentials", func(c *CounterConfig) { c.Username, c.Password = "", "" }},
		{"no password", func(c *CounterConfig) { c.Password = "" }},
		{"tokens and username", func(c *CounterConfig) { c.Tokens = tokenFunc(nil) }},
		{"tokens with NTLM", func(c *CounterConfig) { c.Tokens, c.Username, c.Password, c.NTLM = tokenFunc(nil), "", "", true }},
		{"NTLM over a foreign transport", func(c *CounterConfig) {
			c.NTLM, c.Client = true, &http.Client{Transport: http.NewFileTransport(http.Dir("."))}
		}},
		{"bad tenant", func(c *CounterConfig) { c.Tenants = []string{"not a domain"} }},
	}
	if c, err := NewCounter(good); err != nil || c.Name() != "ews" || c.soap.impersonate {
		t.Fatalf("good config: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mutate(&cfg)
			if _, err := NewCounter(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// tokenFunc is a TokenSource of a function.
type tokenFunc func(context.Context) (string, error)

func (f tokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }
