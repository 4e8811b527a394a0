package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/sources/sourcestest"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

const (
	bobID   = "0b0b0b0b-1111-4222-8333-444455556666"
	daveID  = "da7eda7e-1111-4222-8333-444455556666"
	erinID  = "e1e1e1e1-1111-4222-8333-444455556666"
	frankID = "f4a4f4a4-1111-4222-8333-444455556666"
	// otherTenantID is an Entra tenant the app does not belong to.
	otherTenantID = "0ddba11e-1111-4222-8333-444455556666"
)

// counterDirectory is the directory of the counter tests: carol is listed
// by her user principal name, dave belongs to another Entra tenant.
func counterDirectory(t testing.TB) *UserIndex {
	t.Helper()
	d, err := NewStaticDirectory([]DirectoryEntry{
		{UserID: aliceID, TenantID: tenantID, Tenant: "fabrikam.com", Address: "alice@fabrikam.com"},
		{UserID: bobID, Tenant: "fabrikam.com", Address: "bob@fabrikam.com"},
		{UserID: "carol@fabrikam.com", Tenant: "fabrikam.com", Address: "Carol@Fabrikam.com"},
		{UserID: daveID, TenantID: otherTenantID, Tenant: "fabrikam.com", Address: "dave@fabrikam.com"},
		{UserID: erinID, Tenant: "fabrikam.com", Address: "erin@fabrikam.com"},
		{UserID: frankID, Tenant: "fabrikam.com", Address: "frank@fabrikam.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return NewUserIndex(d)
}

func newTestCounter(t *testing.T, g *fakeGraph, mutate func(*CounterConfig)) (*Counter, *sleeps, *prometheus.Registry) {
	t.Helper()
	s, reg := &sleeps{}, prometheus.NewRegistry()
	cfg := CounterConfig{Users: counterDirectory(t), TenantID: tenantID, Tokens: staticTokens("static-token"), APIURL: g.apiURL(),
		Client: g.srv.Client(), Sleep: s.Sleep, Metrics: reg}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := NewCounter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, s, reg
}

func box(user, name string) sources.Mailbox {
	return sources.Mailbox{Tenant: "fabrikam.com", User: user, Name: name}
}

func TestCounterCountsMixedAnswers(t *testing.T) {
	g := newFakeGraph(t)
	g.unread = map[string]int{aliceID: 3, bobID: 7, "carol@fabrikam.com": 0, frankID: 1}
	g.forbidden[frankID] = true
	g.throttle[bobID] = 1
	c, s, _ := newTestCounter(t, g, nil)
	counts := c.Counts(context.Background(), []sources.Mailbox{
		box("alice@fabrikam.com", events.Inbox),
		box("bob@fabrikam.com", events.Inbox),
		box("carol@fabrikam.com", ""),
		box("dave@fabrikam.com", events.Inbox),    // another Entra tenant
		box("erin@fabrikam.com", events.Inbox),    // 404
		box("frank@fabrikam.com", events.Inbox),   // 403
		box("mallory@fabrikam.com", events.Inbox), // not in the directory
		box("alice@fabrikam.com", "Archive/2020"), // not a well-known folder
		box("alice@fabrikam.com", "SentItems"),
		{Tenant: "contoso.com", User: "alice@fabrikam.com", Name: events.Inbox},
	})
	sourcestest.CheckCounts(t, counts, []sourcestest.Count{
		{Unread: 3},
		{Unread: 7},
		{Unread: 0},
		{Err: sources.ErrNotServed},
		{Err: sources.ErrNotServed, Text: "MailboxNotEnabledForRESTAPI"},
		{Text: "Graph answered 403 ErrorAccessDenied"},
		{Err: sources.ErrNotServed},
		{Err: sources.ErrNotServed},
		{Unread: 3},
		{Err: sources.ErrNotServed},
	})
	// The second batch asks only for bob, after the Retry-After of his
	// throttled request.
	want := [][]string{{aliceID, bobID, "carol@fabrikam.com", erinID, frankID, aliceID}, {bobID}}
	if got := g.received(); !reflect.DeepEqual(got, want) {
		t.Errorf("batches %v, want %v", got, want)
	}
	if got := s.recorded(); !reflect.DeepEqual(got, []time.Duration{time.Second}) {
		t.Errorf("waits %v, want [1s]", got)
	}
	if n := testutil.ToFloat64(c.metrics.throttled.WithLabelValues("429")); n != 1 {
		t.Errorf("throttled{429} = %v, want 1", n)
	}
}

func TestCounterRetriesWholeRequests(t *testing.T) {
	tests := []struct {
		name       string
		whole      []int
		retryAfter string
		waits      []time.Duration
	}{
		{"429 with Retry-After", []int{429}, "1", []time.Duration{time.Second}},
		{"503 without Retry-After", []int{503}, "", []time.Duration{2 * time.Second}},
		{"504 then 429 without Retry-After: doubled", []int{504, 429}, "", []time.Duration{2 * time.Second, 4 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGraph(t)
			g.unread[aliceID], g.unread[bobID] = 3, 4
			g.whole, g.retryAfter = tt.whole, tt.retryAfter
			c, s, _ := newTestCounter(t, g, nil)
			counts := c.Counts(context.Background(), []sources.Mailbox{box("alice@fabrikam.com", events.Inbox), box("bob@fabrikam.com", events.Inbox)})
			sourcestest.CheckCounts(t, counts, []sourcestest.Count{{Unread: 3}, {Unread: 4}})
			if got := s.recorded(); !reflect.DeepEqual(got, tt.waits) {
				t.Errorf("waits %v, want %v", got, tt.waits)
			}
			if got := len(g.received()); got != len(tt.whole)+1 {
				t.Errorf("%d requests, want %d", got, len(tt.whole)+1)
			}
		})
	}
}

func TestCounterSplitsBatches(t *testing.T) {
	g := newFakeGraph(t)
	var entries []DirectoryEntry
	var boxes []sources.Mailbox
	for i := range 45 {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		addr := fmt.Sprintf("user%d@fabrikam.com", i)
		entries = append(entries, DirectoryEntry{UserID: id, Tenant: "fabrikam.com", Address: addr})
		boxes = append(boxes, box(addr, events.Inbox))
		g.unread[id] = i
	}
	d, err := NewStaticDirectory(entries)
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := newTestCounter(t, g, func(cfg *CounterConfig) { cfg.Users = NewUserIndex(d) })
	counts := c.Counts(context.Background(), boxes)
	for i, n := range counts {
		if n.Err != nil || n.Unread != i {
			t.Fatalf("count %d: %d, %v", i, n.Unread, n.Err)
		}
	}
	var sizes []int
	for _, b := range g.received() {
		sizes = append(sizes, len(b))
	}
	if !reflect.DeepEqual(sizes, []int{20, 20, 5}) {
		t.Fatalf("batch sizes %v", sizes)
	}
}

func TestCounterGivesUpOnThrottling(t *testing.T) {
	alice := []sources.Mailbox{box("alice@fabrikam.com", events.Inbox)}
	tests := []struct {
		name       string
		retryAfter string
		deadline   time.Duration // of the context, when set
		waits      int
		requests   int
		text       string
	}{
		{"out of attempts", "1", 0, 3, 4, "after 4 attempts"},
		{"longer than the counter waits", "3600", 0, 0, 1, "wait 1h0m0s (at most 5m0s)"},
		{"past the deadline", "120", time.Minute, 0, 1, "past the deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGraph(t)
			g.unread[aliceID], g.throttle[aliceID], g.retryAfter = 3, 100, tt.retryAfter
			c, s, _ := newTestCounter(t, g, nil)
			ctx := context.Background()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			counts := c.Counts(ctx, alice)
			sourcestest.CheckCounts(t, counts, []sourcestest.Count{{Err: ErrThrottled, Text: tt.text}})
			if !strings.Contains(counts[0].Err.Error(), "ApplicationThrottled") {
				t.Errorf("error %v does not name Graph's last answer", counts[0].Err)
			}
			if got := len(s.recorded()); got != tt.waits {
				t.Errorf("%d waits, want %d", got, tt.waits)
			}
			if got := len(g.received()); got != tt.requests {
				t.Errorf("%d requests, want %d", got, tt.requests)
			}
		})
	}
}

func TestCounterCanceled(t *testing.T) {
	g := newFakeGraph(t)
	g.unread[aliceID], g.throttle[aliceID] = 3, 1
	ctx, cancel := context.WithCancel(context.Background())
	// The context ends while the counter waits for Retry-After.
	c, _, _ := newTestCounter(t, g, func(cfg *CounterConfig) {
		cfg.Sleep = func(ctx context.Context, _ time.Duration) error { cancel(); return ctx.Err() }
	})
	counts := c.Counts(ctx, []sources.Mailbox{box("alice@fabrikam.com", events.Inbox), box("mallory@fabrikam.com", events.Inbox)})
	sourcestest.CheckCounts(t, counts, []sourcestest.Count{{Err: context.Canceled}, {Err: sources.ErrNotServed}})
	counts = c.Counts(ctx, []sources.Mailbox{box("alice@fabrikam.com", events.Inbox)})
	sourcestest.CheckCounts(t, counts, []sourcestest.Count{{Err: context.Canceled}})
	if got := len(g.received()); got != 1 {
		t.Errorf("%d requests after the cancellation, want 1", got)
	}
}

func TestCounterWithAppTokens(t *testing.T) {
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "pushproxy.test"})
	if err != nil {
		t.Fatal(err)
	}
	entra := newFakeEntra(t, cert)
	src, err := tokens.NewAppTokenSource(tokens.AppTokenOptions{Authority: entra.srv.URL, TenantID: tenantID, ClientID: clientID,
		Certificate: cert, Scope: tokens.GraphScope, Client: entra.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	g := newFakeGraph(t)
	g.valid = entra.valid
	g.unread[aliceID] = 3
	c, _, _ := newTestCounter(t, g, func(cfg *CounterConfig) { cfg.Tokens = src })
	alice := []sources.Mailbox{box("alice@fabrikam.com", events.Inbox)}
	sourcestest.CheckCounts(t, c.Counts(context.Background(), alice), []sourcestest.Count{{Unread: 3}})

	// Graph refuses token-1 (revoked): the counter asks Entra for a new
	// one and tries again, once.
	g.mu.Lock()
	g.valid = func(tok string) bool { return tok != "token-1" && entra.valid(tok) }
	g.mu.Unlock()
	sourcestest.CheckCounts(t, c.Counts(context.Background(), alice), []sourcestest.Count{{Unread: 3}})
	g.mu.Lock()
	g.valid = func(string) bool { return false }
	g.mu.Unlock()
	sourcestest.CheckCounts(t, c.Counts(context.Background(), alice), []sourcestest.Count{{Text: "401 InvalidAuthenticationToken"}})
}

func TestCounterErrors(t *testing.T) {
	alice := []sources.Mailbox{box("alice@fabrikam.com", events.Inbox)}
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "pushproxy.test"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "other.test"})
	if err != nil {
		t.Fatal(err)
	}
	entra := newFakeEntra(t, cert)
	wrongCert, err := tokens.NewAppTokenSource(tokens.AppTokenOptions{Authority: entra.srv.URL, TenantID: tenantID, ClientID: clientID,
		Certificate: other, Scope: tokens.GraphScope, Client: entra.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		whole  []int
		mutate func(*CounterConfig)
		err    error
		text   string
	}{
		{"server error", []int{500}, nil, nil, "Graph answered 500 Internal Server Error: whole request"},
		{"token endpoint refuses the assertion", nil, func(c *CounterConfig) { c.Tokens = wrongCert }, nil, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGraph(t)
			g.unread[aliceID], g.whole = 3, tt.whole
			c, _, _ := newTestCounter(t, g, tt.mutate)
			sourcestest.CheckCounts(t, c.Counts(context.Background(), alice), []sourcestest.Count{{Err: tt.err, Text: tt.text}})
		})
	}
	var te *tokens.TokenError
	g := newFakeGraph(t)
	c, _, _ := newTestCounter(t, g, func(c *CounterConfig) { c.Tokens = wrongCert })
	if err := c.Counts(context.Background(), alice)[0].Err; !errors.As(err, &te) || te.Code != "invalid_client" || te.Status != http.StatusUnauthorized {
		t.Fatalf("token error %v is not a TokenError", err)
	}
}

func TestNewCounterChecksConfig(t *testing.T) {
	good := CounterConfig{Users: counterDirectory(t), Tokens: staticTokens("t")}
	tests := []struct {
		name   string
		mutate func(*CounterConfig)
	}{
		{"no users", func(c *CounterConfig) { c.Users = nil }},
		{"no tokens", func(c *CounterConfig) { c.Tokens = nil }},
		{"relative API URL", func(c *CounterConfig) { c.APIURL = "graph.microsoft.com/v1.0" }},
	}
	if c, err := NewCounter(good); err != nil || c.Name() != "graph" || c.batchURL != DefaultAPIURL+"/$batch" {
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

func TestWellKnownFolder(t *testing.T) {
	tests := []struct {
		name, want string
		ok         bool
	}{
		{events.Inbox, "inbox", true},
		{"", "inbox", true},
		{"inbox", "inbox", true},
		{"SentItems", "sentitems", true},
		{"drafts", "drafts", true},
		{"Archive/2020", "", false},
		{"AAMkAGI2TG93AAA=", "", false},
		{"../messages", "", false},
	}
	for _, tt := range tests {
		if got, ok := wellKnownFolder(tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("%q: got %q, %v", tt.name, got, ok)
		}
	}
}
