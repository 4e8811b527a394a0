package imap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// sink is a PublishFunc that collects the events and fails the first
// fail calls.
type sink struct {
	mu     sync.Mutex
	fail   int
	calls  int
	events chan events.Event
	// skipped holds the events next read for other users.
	skipped map[string][]events.Event
}

func newSink(fail int) *sink {
	return &sink{fail: fail, events: make(chan events.Event, 1000), skipped: map[string][]events.Event{}}
}

func (s *sink) publish(_ context.Context, evs []events.Event) error {
	s.mu.Lock()
	s.calls++
	if s.fail > 0 {
		s.fail--
		s.mu.Unlock()
		return errors.New("stream unavailable")
	}
	s.mu.Unlock()
	for _, e := range evs {
		s.events <- e
	}
	return nil
}

// next is the next published event of user, skipping other users'.
func (s *sink) next(t *testing.T, user string) events.Event {
	t.Helper()
	if q := s.skipped[user]; len(q) > 0 {
		s.skipped[user] = q[1:]
		return q[0]
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-s.events:
			if e.User == user {
				return e
			}
			s.skipped[e.User] = append(s.skipped[e.User], e)
		case <-timeout:
			t.Fatalf("no snapshot of %s", user)
		}
	}
}

// expect is the next published event of user, which must state want.
func (s *sink) expect(t *testing.T, user string, want int) events.Event {
	t.Helper()
	e := s.next(t, user)
	checkSnapshot(t, e, user, want)
	return e
}

// checkSnapshot checks that e is a valid snapshot of user's INBOX with
// unread want.
func checkSnapshot(t *testing.T, e events.Event, user string, want int) {
	t.Helper()
	if e.Kind != events.KindSnapshot || e.Source != Source || e.User != user || e.Tenant != "example.com" ||
		e.Mailbox != events.Inbox || e.Unread == nil || e.OccurredAt.IsZero() || !strings.HasPrefix(e.ChangeID, "imap:") {
		t.Fatalf("snapshot %+v", e)
	}
	if *e.Unread != want {
		t.Fatalf("snapshot of %s with unread %d, want %d (%s)", user, *e.Unread, want, e.ChangeID)
	}
	// events.Validate knows no "imap" source yet: check the rest.
	valid := e
	valid.Source = events.SourceNative
	if err := valid.Validate(); err != nil {
		t.Fatalf("snapshot %+v: %v", e, err)
	}
}

// sleeps records the waits the watcher asked for, and waits at most a
// millisecond of each.
type sleeps struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return service.Sleep(ctx, min(d, time.Millisecond))
}

func (s *sleeps) atLeast(d time.Duration) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Duration
	for _, w := range s.waits {
		if w >= d {
			out = append(out, w)
		}
	}
	return out
}

func mailboxOf(user string) sources.Mailbox {
	return sources.Mailbox{Tenant: "Example.com", User: user}
}

// watching runs a watcher of cfg until the test ends.
type watching struct {
	w      *Watcher
	sink   *sink
	sleeps *sleeps
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func watch(t *testing.T, cfg WatchConfig, fail int) *watching {
	t.Helper()
	h := &watching{sink: newSink(fail), sleeps: &sleeps{}, done: make(chan error, 1)}
	cfg.Publish = h.sink.publish
	if cfg.Sleep == nil {
		cfg.Sleep = h.sleeps.sleep
	}
	cfg.Registerer = prometheus.NewRegistry()
	cfg.LoginsPerSecond = 1000
	if cfg.RetryMin == 0 {
		cfg.RetryMin, cfg.RetryMax = time.Millisecond, 10*time.Millisecond
	}
	if cfg.Settle == 0 {
		cfg.Settle = 20 * time.Millisecond
	}
	w, err := NewWatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- w.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop stops the watcher and waits for Run, at most a few seconds.
func (h *watching) stop(t *testing.T) {
	t.Helper()
	h.once.Do(func() {
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
	})
}

// waitMetric waits until the counter or gauge c reaches at least want.
func waitMetric(t *testing.T, c prometheus.Collector, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(c) < want {
		if time.Now().After(deadline) {
			t.Fatalf("metric at %v, want at least %v", testutil.ToFloat64(c), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestWatcherFollowsTheMailbox(t *testing.T) {
	cases := []struct {
		name    string
		mode    TLSMode
		esearch bool
	}{
		{"implicit TLS, SEARCH", TLSImplicit, false},
		{"STARTTLS, ESEARCH", TLSStartTLS, true},
		{"plain text on loopback, ESEARCH", TLSNone, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := newIdleBackend()
			be.addUser("alice@example.com", "pw", 3, 1)
			be.addUser("bob@example.com", "pw", 0, 0)
			server := startIdleServer(t, be, tc.mode, tc.esearch)
			h := watch(t, WatchConfig{Server: server, Users: []sources.Mailbox{mailboxOf("alice@example.com"), mailboxOf("bob@example.com")}}, 0)

			first := h.sink.expect(t, "alice@example.com", 2)
			h.sink.expect(t, "bob@example.com", 0)
			be.deliver(t, "alice@example.com", 1)
			h.sink.expect(t, "alice@example.com", 3)
			be.markSeen(t, "alice@example.com", 2)
			again := h.sink.expect(t, "alice@example.com", 2)
			if again.ChangeID == first.ChangeID {
				t.Errorf("2 unseen, 3, then 2 again share the change id %s: the stream would drop the last", first.ChangeID)
			}
			be.expunge(t, "alice@example.com", 3)
			h.sink.expect(t, "alice@example.com", 1)
			be.deliver(t, "alice@example.com", 2)
			h.sink.expect(t, "alice@example.com", 3)
			if got := testutil.ToFloat64(h.w.metrics.connected); got != 2 {
				t.Errorf("%v connected users, want 2", got)
			}
			if got := testutil.ToFloat64(h.w.metrics.watched); got != 2 {
				t.Errorf("%v watched users, want 2", got)
			}
			if got := h.w.Status(); !slices.Equal(got, []TenantStatus{{Tenant: "example.com", Watched: 2, Connected: 2}}) {
				t.Errorf("status %+v, want 2 watched and connected of example.com", got)
			}
		})
	}
}

func TestWatcherCoalescesBursts(t *testing.T) {
	be := newIdleBackend()
	be.addUser("alice@example.com", "pw", 2, 0)
	server := startIdleServer(t, be, TLSNone, false)
	h := watch(t, WatchConfig{Server: server, Users: []sources.Mailbox{mailboxOf("alice@example.com")}, Settle: 300 * time.Millisecond}, 0)
	h.sink.expect(t, "alice@example.com", 2)
	for range 5 {
		be.deliver(t, "alice@example.com", 1)
	}
	// One snapshot for the burst, read after it settled.
	h.sink.expect(t, "alice@example.com", 7)
}

func TestWatcherReconnects(t *testing.T) {
	cases := []struct {
		name   string
		end    func(be *idleBackend, t testing.TB, user string)
		reason string
	}{
		{"server says BYE", (*idleBackend).bye, reasonBye},
		{"connection dropped", (*idleBackend).drop, reasonDropped},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := newIdleBackend()
			be.addUser("alice@example.com", "pw", 1, 0)
			server := startIdleServer(t, be, TLSImplicit, true)
			h := watch(t, WatchConfig{Server: server, Users: []sources.Mailbox{mailboxOf("alice@example.com")}}, 0)
			before := h.sink.expect(t, "alice@example.com", 1)
			tc.end(be, t, "alice@example.com")
			after := h.sink.expect(t, "alice@example.com", 1)
			if after.ChangeID != before.ChangeID {
				t.Errorf("the same state read after reconnecting has the change id %s, before %s: the stream would not drop it", after.ChangeID, before.ChangeID)
			}
			if got := testutil.ToFloat64(h.w.metrics.reconnects.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("%v reconnects for %s, want 1", got, tc.reason)
			}
			be.deliver(t, "alice@example.com", 1)
			h.sink.expect(t, "alice@example.com", 2)
		})
	}
}

func TestWatcherKeepsUnpublishedSnapshots(t *testing.T) {
	be := newIdleBackend()
	be.addUser("alice@example.com", "pw", 4, 1)
	server := startIdleServer(t, be, TLSNone, false)
	h := watch(t, WatchConfig{Server: server, Users: []sources.Mailbox{mailboxOf("alice@example.com")}}, 2)
	h.sink.expect(t, "alice@example.com", 3)
	m := h.w.metrics.events
	waitMetric(t, m.WithLabelValues(outcomePublished), 1)
	if failed, published := testutil.ToFloat64(m.WithLabelValues(outcomeFailed)), testutil.ToFloat64(m.WithLabelValues(outcomePublished)); failed != 2 || published != 1 {
		t.Errorf("%v failed and %v published, want 2 and 1", failed, published)
	}
	h.sink.mu.Lock()
	calls := h.sink.calls
	h.sink.mu.Unlock()
	if calls != 3 {
		t.Errorf("%d publish calls, want 3", calls)
	}
}

func TestWatcherBacksOffRefusedLogins(t *testing.T) {
	users, err := NewUsers([]UserPassword{
		{Tenant: "example.com", User: "alice@example.com", Password: "pw"},
		{Tenant: "example.com", User: "bob@example.com", Password: "wrong"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		server func(Config) Config
	}{
		{"master user acting as an unknown user", func(c Config) Config { return c }},
		{"wrong password", func(c Config) Config {
			c.MasterUser, c.MasterPassword, c.Login, c.Users = "", "", LoginUserPasswords, users
			return c
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := newIdleBackend()
			be.addUser("alice@example.com", "pw", 1, 0)
			server := tc.server(startIdleServer(t, be, TLSImplicit, false))
			h := watch(t, WatchConfig{
				Server: server, Users: []sources.Mailbox{mailboxOf("alice@example.com"), mailboxOf("bob@example.com")},
				LoginRetryMin: 4 * time.Minute,
			}, 0)
			h.sink.expect(t, "alice@example.com", 1)
			waitMetric(t, h.w.metrics.reconnects.WithLabelValues(reasonLogin), 4)
			waits := h.sleeps.atLeast(time.Minute)
			if len(waits) < 4 {
				t.Fatalf("waits after refused logins %v, want at least 4", waits)
			}
			for _, d := range waits {
				if d < 2*time.Minute || d > DefaultLoginRetryMax {
					t.Errorf("wait %v after a refused login, want between 2m and %v", d, DefaultLoginRetryMax)
				}
			}
			if got := testutil.ToFloat64(h.w.metrics.connected); got != 1 {
				t.Errorf("%v connected users, want 1", got)
			}
		})
	}
}

func TestWatcherRefreshesIdle(t *testing.T) {
	be := newIdleBackend()
	be.addUser("alice@example.com", "pw", 1, 0)
	server := startIdleServer(t, be, TLSNone, true)
	h := watch(t, WatchConfig{Server: server, Users: []sources.Mailbox{mailboxOf("alice@example.com")}, IdleRefresh: 20 * time.Millisecond}, 0)
	h.sink.expect(t, "alice@example.com", 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, searches := be.stats(); searches["alice@example.com"] >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("IDLE is not refreshed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The same state read again is not published again.
	select {
	case e := <-h.sink.events:
		t.Errorf("snapshot %+v of an unchanged mailbox", e)
	default:
	}
	be.deliver(t, "alice@example.com", 1)
	h.sink.expect(t, "alice@example.com", 2)
}

func TestWatcherShutsDownCleanly(t *testing.T) {
	be := newIdleBackend()
	var boxes []sources.Mailbox
	for _, u := range []string{"alice@example.com", "bob@example.com", "carol@example.com"} {
		be.addUser(u, "pw", 1, 0)
		boxes = append(boxes, mailboxOf(u))
	}
	server := startIdleServer(t, be, TLSImplicit, false)
	h := watch(t, WatchConfig{Server: server, Users: boxes}, 0)
	for _, b := range boxes {
		be.waitIdle(t, b.User)
	}
	start := time.Now()
	h.stop(t)
	if elapsed := time.Since(start); elapsed > DefaultShutdownTimeout+time.Second {
		t.Errorf("stopping took %v", elapsed)
	}
	if logouts, _ := be.stats(); logouts != len(boxes) {
		t.Errorf("%d LOGOUT, want %d", logouts, len(boxes))
	}
	if connected, watched := testutil.ToFloat64(h.w.metrics.connected), testutil.ToFloat64(h.w.metrics.watched); connected != 0 || watched != 0 {
		t.Errorf("%v connected and %v watched users after stopping", connected, watched)
	}
	if err := h.w.Run(context.Background()); err == nil {
		t.Error("a second Run ran")
	}
}

func TestNewWatcherRefuses(t *testing.T) {
	master := Config{Addr: "mail.example.com:993", MasterUser: "master", MasterPassword: "pw"}
	users, err := NewUsers([]UserPassword{{Tenant: "example.com", User: "alice@example.com", Password: "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(context.Context, []events.Event) error { return nil }
	alice, bob := mailboxOf("alice@example.com"), mailboxOf("bob@example.com")
	cases := []struct {
		name    string
		cfg     WatchConfig
		wantErr string
	}{
		{"more users than connections", WatchConfig{Server: master, Users: []sources.Mailbox{alice, bob}, MaxConns: 1, Publish: publish},
			"2 users to watch need 2 connections, more than the 1 allowed"},
		{"no publish", WatchConfig{Server: master, Users: []sources.Mailbox{alice}}, "publish function"},
		{"IDLE refresh past RFC 2177", WatchConfig{Server: master, Publish: publish, IdleRefresh: 30 * time.Minute}, "29m"},
		{"retry bounds", WatchConfig{Server: master, Publish: publish, RetryMin: time.Hour}, "minimum retry"},
		{"user twice", WatchConfig{Server: master, Users: []sources.Mailbox{alice, {Tenant: "example.com", User: "alice@example.com", Name: "inbox"}}, Publish: publish}, "twice"},
		{"no tenant", WatchConfig{Server: master, Users: []sources.Mailbox{{User: "alice"}}, Publish: publish}, "tenant"},
		{"bad user", WatchConfig{Server: master, Users: []sources.Mailbox{{Tenant: "example.com", User: "a b"}}, Publish: publish}, "user"},
		{"tenant not served", WatchConfig{Server: Config{Addr: "h:993", MasterUser: "m", MasterPassword: "p", Tenants: []string{"other.org"}}, Users: []sources.Mailbox{alice}, Publish: publish}, "not served"},
		{"no password", WatchConfig{Server: Config{Addr: "h:993", Login: LoginUserPasswords, Users: users}, Users: []sources.Mailbox{alice, bob}, Publish: publish}, "not served"},
		{"separator in the user", WatchConfig{Server: master, Users: []sources.Mailbox{{Tenant: "example.com", User: "a*b"}}, Publish: publish}, "separator"},
		{"bad server", WatchConfig{Server: Config{Addr: "nowhere"}, Publish: publish}, "host:port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewWatcher(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one about %q", err, tc.wantErr)
			}
		})
	}
	w, err := NewWatcher(WatchConfig{Server: master, Users: []sources.Mailbox{alice, bob}, MaxConns: 2, Publish: publish})
	if err != nil || w.Len() != 2 {
		t.Fatalf("watcher of 2 users within 2 connections: %v", err)
	}
}

// TestWatcherServerTimeoutsDefault: a server Config without timeouts (as
// the flags build it) gets the defaults, not a zero deadline that ends
// every session before it starts.
func TestWatcherServerTimeoutsDefault(t *testing.T) {
	w, err := NewWatcher(WatchConfig{
		Server:  Config{Addr: "127.0.0.1:143", TLS: TLSNone, InsecurePlain: true, Login: LoginSeparator, MasterUser: "m", MasterPassword: "p"},
		Users:   []sources.Mailbox{{Tenant: "example.com", User: "alice@example.com"}},
		Publish: func(context.Context, []events.Event) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.Server.Timeout != DefaultTimeout || w.cfg.Server.DialTimeout != DefaultDialTimeout {
		t.Fatalf("server timeouts %s, %s; want %s, %s", w.cfg.Server.Timeout, w.cfg.Server.DialTimeout, DefaultTimeout, DefaultDialTimeout)
	}
}

// TestWatcherBoundsLoginsInFlight holds every login at the server: the
// watcher opens at most LoginsInFlight connections at once, and every
// user connects once the server answers.
func TestWatcherBoundsLoginsInFlight(t *testing.T) {
	be := newIdleBackend()
	var users []sources.Mailbox
	for i := range 12 {
		u := fmt.Sprintf("user%d@example.com", i)
		be.addUser(u, "pw", 1, 0)
		users = append(users, mailboxOf(u))
	}
	be.gate = make(chan struct{})
	server := startIdleServer(t, be, TLSNone, true)
	h := watch(t, WatchConfig{Server: server, Users: users, LoginsInFlight: 3}, 0)
	be.waitInLogin(3)
	// The others wait for a token: give them the chance to (wrongly) go on.
	time.Sleep(100 * time.Millisecond)
	close(be.gate)
	for _, u := range users {
		h.sink.expect(t, u.User, 1)
	}
	be.mu.Lock()
	most := be.mostInLogin
	be.mu.Unlock()
	if most != 3 {
		t.Fatalf("%d logins at once, want at most (and here exactly) 3", most)
	}
}

// TestWatcherRetriesTemporaryLoginFailures: a login answered NO
// [UNAVAILABLE] (the server's trouble, not a refusal of the user) is
// tried again after the short back-off, not the long one of a refusal.
func TestWatcherRetriesTemporaryLoginFailures(t *testing.T) {
	be := newIdleBackend()
	be.addUser("alice@example.com", "pw", 2, 0)
	be.unavailable["alice@example.com*master"] = 2
	server := startIdleServer(t, be, TLSNone, true)
	h := watch(t, WatchConfig{Server: server, Users: []sources.Mailbox{mailboxOf("alice@example.com")}, LoginRetryMin: 4 * time.Minute}, 0)
	h.sink.expect(t, "alice@example.com", 2)
	if got := testutil.ToFloat64(h.w.metrics.reconnects.WithLabelValues(reasonLogin)); got != 0 {
		t.Errorf("%v refused logins counted, want 0", got)
	}
	if got := testutil.ToFloat64(h.w.metrics.reconnects.WithLabelValues(reasonError)); got != 2 {
		t.Errorf("%v temporary failures counted, want 2", got)
	}
	if waits := h.sleeps.atLeast(time.Minute); len(waits) != 0 {
		t.Errorf("long waits %v after temporary failures", waits)
	}
}
