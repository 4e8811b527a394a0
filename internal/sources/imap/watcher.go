package imap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Watcher watches mailboxes with IMAP IDLE, one connection per user, and
// publishes a snapshot of a mailbox's unseen count when it connects and
// after every change (see the package documentation).
type Watcher struct {
	cfg     WatchConfig
	conn    connector
	users   []*watched
	metrics *watchMetrics
	limiter *rate.Limiter
	// logins holds a token per connection being opened.
	logins  chan struct{}
	pub     *publisher
	running atomic.Bool
}

// TenantStatus is how many users of a tenant the watcher watches, and how
// many of them are connected (logged in with the Inbox open) right now.
type TenantStatus struct {
	Tenant    string `json:"tenant"`
	Watched   int    `json:"watched"`
	Connected int    `json:"connected"`
}

// Status counts the watched and connected users per tenant, sorted by
// tenant.
func (w *Watcher) Status() []TenantStatus {
	var out []TenantStatus
	index := map[string]int{}
	for _, u := range w.users {
		i, ok := index[u.box.Tenant]
		if !ok {
			i = len(out)
			index[u.box.Tenant] = i
			out = append(out, TenantStatus{Tenant: u.box.Tenant})
		}
		out[i].Watched++
		if u.connected.Load() {
			out[i].Connected++
		}
	}
	slices.SortFunc(out, func(a, b TenantStatus) int { return strings.Compare(a.Tenant, b.Tenant) })
	return out
}

// NewWatcher checks cfg, resolves each user's login and registers the
// metrics. It does not connect. More users than cfg.MaxConns, a user
// listed twice, or one the server does not serve is an error.
func NewWatcher(cfg WatchConfig) (*Watcher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	conn, err := newConnector(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("IMAP watcher: %w", err)
	}
	w := &Watcher{cfg: cfg, conn: conn, users: make([]*watched, 0, len(cfg.Users))}
	seen := make(map[sources.Mailbox]bool, len(cfg.Users))
	for i, box := range cfg.Users {
		box, err := watchedMailbox(box)
		if err != nil {
			return nil, fmt.Errorf("IMAP watcher: user %d: %w", i+1, err)
		}
		if seen[box] {
			return nil, fmt.Errorf("IMAP watcher: user %q of tenant %q is listed twice", box.User, box.Tenant)
		}
		seen[box] = true
		l, err := conn.loginFor(box)
		if errors.Is(err, sources.ErrNotServed) {
			return nil, fmt.Errorf("IMAP watcher: user %q of tenant %q is not served by %s (tenant not listed, or no password for the user)", box.User, box.Tenant, cfg.Server.Addr)
		}
		if err != nil {
			return nil, fmt.Errorf("IMAP watcher: user %q of tenant %q: %w", box.User, box.Tenant, err)
		}
		w.users = append(w.users, &watched{box: box, login: l})
	}
	if w.metrics, err = newWatchMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	w.limiter = rate.NewLimiter(rate.Limit(cfg.LoginsPerSecond), 1)
	w.logins = make(chan struct{}, cfg.LoginsInFlight)
	w.pub = newPublisher(cfg, w.metrics)
	return w, nil
}

// watchedMailbox checks a watched mailbox and puts it in the events' form:
// a lower-case tenant, INBOX for an empty or any-case inbox name.
func watchedMailbox(box sources.Mailbox) (sources.Mailbox, error) {
	box.Tenant = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(box.Tenant)), ".")
	if err := events.ValidateTenant(box.Tenant); err != nil {
		return box, err
	}
	if err := events.ValidateAddress("user", box.User); err != nil {
		return box, err
	}
	if box.Name == "" || strings.EqualFold(box.Name, events.Inbox) {
		box.Name = events.Inbox
	}
	return box, nil
}

// Len is the number of watched users.
func (w *Watcher) Len() int { return len(w.users) }

// Run watches every user until ctx ends, then logs every connection out
// and publishes what is left, each within WatchConfig.ShutdownTimeout. It
// returns nil then, and an error only if it was already running.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("IMAP watcher: Run called twice")
	}
	run := newRunID()
	w.metrics.watched.Set(float64(len(w.users)))
	defer w.metrics.watched.Set(0)
	w.cfg.Log.Info().Int("users", len(w.users)).Str("server", w.cfg.Server.Addr).Msg("IMAP watcher starting")

	published := make(chan struct{})
	go func() {
		defer close(published)
		w.pub.run(ctx)
	}()
	var wg sync.WaitGroup
	for _, u := range w.users {
		wg.Go(func() { w.watch(ctx, run, u) })
	}
	wg.Wait()
	<-published
	last, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.ShutdownTimeout)
	defer cancel()
	w.pub.flush(last)
	w.cfg.Log.Info().Msg("IMAP watcher stopped")
	return nil
}

// watch keeps one user's session going until ctx ends: it reconnects after
// a back-off, a longer one when the server refused the login.
func (w *Watcher) watch(ctx context.Context, run string, u *watched) {
	again := newRetry(w.cfg.RetryMin, w.cfg.RetryMax)
	refused := newRetry(w.cfg.LoginRetryMin, w.cfg.LoginRetryMax)
	for {
		if err := w.limiter.Wait(ctx); err != nil {
			return
		}
		s := &session{w: w, u: u, runID: run}
		healthy, err := s.run(ctx)
		if ctx.Err() != nil {
			return
		}
		reason := s.endReason(err)
		w.metrics.reconnects.WithLabelValues(reason).Inc()
		if healthy {
			again.reset()
			refused.reset()
		}
		wait := again.next()
		if reason == reasonLogin {
			wait = refused.next()
			w.cfg.Log.Warn().Err(err).Str("tenant", u.box.Tenant).Str("user", u.box.User).Dur("retry_in", wait).Msg("IMAP server refused a watched user's login")
		} else {
			w.cfg.Log.Debug().Err(err).Str("tenant", u.box.Tenant).Str("user", u.box.User).Str("reason", reason).Dur("retry_in", wait).Msg("IMAP watch connection ended")
		}
		if err := w.cfg.Sleep(ctx, wait); err != nil {
			return
		}
	}
}

// offer hands a state read in a session to publishing: always the first
// of a session (the state may have changed while disconnected), later
// ones only when they differ from the last handed over.
func (w *Watcher) offer(u *watched, run string, st mailboxState, first bool) {
	e := u.snapshot(run, st, w.cfg.Now())
	if !first && e.ChangeID == u.queued {
		return
	}
	u.queued = e.ChangeID
	w.pub.put(u, e)
}
