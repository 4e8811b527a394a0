package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Manager defaults.
const (
	// DefaultManageRate is how many management requests (create, renew,
	// delete) the Manager sends Graph a second: 10,000 users are
	// subscribed in about 17 minutes.
	DefaultManageRate = 10
	// DefaultManageConcurrency bounds the requests in flight: a create
	// waits for Graph to validate both URLs, which takes a while.
	DefaultManageConcurrency = 8
	// DefaultResyncInterval is how often the directory is read again.
	DefaultResyncInterval = 10 * time.Minute
	// DefaultStopTimeout bounds the deletions of DeleteOnStop.
	DefaultStopTimeout = 30 * time.Second
	// DefaultRequestTimeout bounds one management request.
	DefaultRequestTimeout = time.Minute
	// DefaultErrorBackoff is the wait after a failed operation; it
	// doubles with each further failure up to DefaultMaxErrorBackoff.
	DefaultErrorBackoff    = time.Minute
	DefaultMaxErrorBackoff = time.Hour
	// ProgressInterval is how often a log line reports the progress of
	// the creations.
	ProgressInterval = 10 * time.Second
)

// ManagerConfig configures a Manager. Users, Tokens, NotificationURL,
// ClientStates and Store are required.
type ManagerConfig struct {
	// Users lists the users to subscribe for (a *StaticDirectory).
	Users UserLister
	// TenantID is the app's Entra tenant id: a user whose directory entry
	// names another tenant id gets no subscription (the app's token
	// cannot subscribe to it), as the Counter does not serve it.
	TenantID string
	// Tokens gives app-only tokens for GraphScope; subscribing to messages
	// needs the Mail.ReadBasic.All (or Mail.Read) application permission.
	// Share the Counter's (CounterConfig.Tokens) to share its token cache.
	Tokens TokenSource
	// APIURL is the Graph API base URL; DefaultAPIURL when empty.
	APIURL string
	// Client sends the requests; a client with a one-minute timeout when
	// nil. The Counter's may be shared.
	Client *http.Client
	// NotificationURL is where Graph posts change notifications: ingest's
	// Graph endpoint, e.g. https://push.example.com/v1/graph?key=...
	// (Graph requires https).
	NotificationURL string
	// LifecycleURL is where Graph posts lifecycle notifications: where
	// LifecycleHandler is mounted, e.g.
	// https://push.example.com/v1/graph/lifecycle?key=... When empty,
	// they go to NotificationURL and the source passes them on: set
	// Config.OnLifecycle to OnLifecycle.
	LifecycleURL string
	// ClientStates are the clientState secrets, written as
	// Config.ClientStates (the source's): a new subscription gets the
	// last one that may report for its user's tenant; a lifecycle
	// notification must carry one of them. A subscription whose secret is
	// no longer the one it would get is created anew, so that a secret
	// can be rotated: add the new one last, and remove the old one once
	// the subscriptions are replaced.
	ClientStates []string
	// Key, when set, is required as the query parameter "key" by
	// LifecycleHandler (put it in LifecycleURL).
	Key string
	// Store keeps the subscriptions across restarts.
	Store SubscriptionStore
	// Missed, when set, is called with the tenant and address of the user
	// whose subscription Graph reports missed notifications for: its
	// count may be wrong until it is read again. It runs on the request's
	// goroutine: keep it short.
	Missed func(ctx context.Context, tenant, user string)
	// Lifetime is the lifetime asked for a subscription,
	// MaxMailSubscriptionLifetime when 0 (at most that; at the maximum,
	// ClockSkewMargin less is asked for).
	Lifetime time.Duration
	// RenewBefore is how long before its expiry a subscription is
	// renewed, Lifetime/3 when 0; RenewJitter spreads renewals over that
	// much later (RenewBefore/2 when 0, none when negative), by user, so
	// that subscriptions created together are not renewed together: by
	// default a subscription is renewed when between a third and a sixth
	// of its lifetime is left.
	RenewBefore time.Duration
	RenewJitter time.Duration
	// Rate is the most management requests a second (DefaultManageRate
	// when 0); Concurrency the most in flight (DefaultManageConcurrency
	// when 0).
	Rate        float64
	Concurrency int
	// ResyncInterval is how often Users is listed again
	// (DefaultResyncInterval when 0).
	ResyncInterval time.Duration
	// DeleteOnStop deletes every subscription when Run ends, within
	// StopTimeout (DefaultStopTimeout when 0). Off, the subscriptions
	// outlive a restart and notifications keep flowing meanwhile. Run's
	// context ending with a cause other than context.Canceled (a lost
	// lease: another process manages them now) deletes nothing.
	DeleteOnStop bool
	StopTimeout  time.Duration
	// RequestTimeout bounds one request (DefaultRequestTimeout when 0). A
	// request in flight is finished even when Run's context ends, so
	// that a created subscription is never lost track of.
	RequestTimeout time.Duration
	// MaxAttempts, RetryWait and MaxRetryWait bound the retries of a
	// throttled request, as for the Counter (DefaultCountAttempts,
	// DefaultRetryWait, DefaultMaxRetryWait when 0). While Graph asks to
	// wait, every request of the Manager waits.
	MaxAttempts  int
	RetryWait    time.Duration
	MaxRetryWait time.Duration
	// ErrorBackoff and MaxErrorBackoff space the attempts of an operation
	// that failed (DefaultErrorBackoff, DefaultMaxErrorBackoff when 0).
	ErrorBackoff    time.Duration
	MaxErrorBackoff time.Duration
	// Now, Sleep and After are the clock: time.Now, a timer and
	// time.After when nil. Tests replace them so that they never wait.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	After func(d time.Duration) <-chan time.Time
	// Log receives a line per operation that fails, per lifecycle
	// notification, and the progress of the creations.
	Log zerolog.Logger
	// Metrics, when set, receives the manager's metrics.
	Metrics prometheus.Registerer
}

// Manager keeps one Graph subscription on the inbox messages of each user
// of the directory (InboxResource, SubscriptionChangeTypes): it creates
// the missing ones, renews each well before it expires, creates anew one
// Graph removed or lost, and deletes those of users who left the
// directory. Its state survives restarts in a SubscriptionStore, so a
// restart creates nothing that exists. It answers lifecycle
// notifications (LifecycleHandler). Run it in one process only: two
// Managers on one store would each create subscriptions.
type Manager struct {
	cfg              ManagerConfig
	http             *graphClient
	subscriptionsURL string
	states           *clientStates
	urlVersion       string
	key              sources.URLKey
	limiter          *rate.Limiter
	metrics          *managerMetrics
	// wake tells Run that there may be work: a lifecycle notification,
	// a finished operation.
	wake chan struct{}
	// workers are the operations in flight.
	workers sync.WaitGroup

	mu      sync.Mutex
	loaded  bool
	entries map[string]*entry
	// bySub finds the key of a subscription id.
	bySub    map[string]string
	inflight int
	// pauseUntil holds every request while Graph asks to wait.
	pauseUntil time.Time
	// created counts creations since the last progress line, at
	// lastProgress.
	created      int
	lastProgress time.Time
}

// NewManager checks cfg and registers the metrics.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("configuring the Graph subscription manager: %w", err)
	}
	states, err := newClientStates(cfg.ClientStates)
	if err != nil {
		return nil, fmt.Errorf("configuring the Graph subscription manager: %w", err)
	}
	m, err := newManagerMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	return &Manager{
		cfg: cfg,
		http: &graphClient{tokens: cfg.Tokens, client: cfg.Client, retryWait: cfg.RetryWait,
			maxRetryWait: cfg.MaxRetryWait, sleep: cfg.Sleep, now: cfg.Now},
		subscriptionsURL: strings.TrimRight(cfg.APIURL, "/") + "/subscriptions",
		states:           states,
		urlVersion:       shortHash("pushproxy graph urls", cfg.NotificationURL+"\x00"+cfg.LifecycleURL+"\x00"+SubscriptionChangeTypes),
		key:              sources.NewURLKey(cfg.Key),
		limiter:          rate.NewLimiter(rate.Limit(cfg.Rate), 1),
		metrics:          m,
		wake:             make(chan struct{}, 1),
		entries:          map[string]*entry{},
		bySub:            map[string]string{},
	}, nil
}

// defaults checks the required settings and fills in the others.
func (cfg *ManagerConfig) defaults() error {
	switch {
	case cfg.Users == nil:
		return errors.New("a user directory is required")
	case cfg.Tokens == nil:
		return errors.New("a token source is required")
	case cfg.Store == nil:
		return errors.New("a subscription store is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	if err := checkHTTPURL("API URL", cfg.APIURL, false); err != nil {
		return err
	}
	if cfg.NotificationURL == "" {
		return errors.New("a notification URL is required")
	}
	if cfg.LifecycleURL == "" {
		cfg.LifecycleURL = cfg.NotificationURL
	}
	for _, u := range [][2]string{{"notification URL", cfg.NotificationURL}, {"lifecycle URL", cfg.LifecycleURL}} {
		if err := checkHTTPURL(u[0], u[1], true); err != nil {
			return err
		}
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = MaxMailSubscriptionLifetime
	}
	if cfg.Lifetime < time.Minute || cfg.Lifetime > MaxMailSubscriptionLifetime {
		return fmt.Errorf("the subscription lifetime %s is not between 1m and %s", cfg.Lifetime, MaxMailSubscriptionLifetime)
	}
	if cfg.RenewBefore == 0 {
		cfg.RenewBefore = cfg.Lifetime / 3
	}
	if cfg.RenewBefore <= 0 || cfg.RenewBefore >= cfg.Lifetime {
		return fmt.Errorf("renewing %s before the expiry does not fit a lifetime of %s", cfg.RenewBefore, cfg.Lifetime)
	}
	switch {
	case cfg.RenewJitter == 0:
		cfg.RenewJitter = cfg.RenewBefore / 2
	case cfg.RenewJitter < 0:
		cfg.RenewJitter = 0
	case cfg.RenewJitter >= cfg.RenewBefore:
		return fmt.Errorf("the renewal jitter %s must be shorter than the %s before the expiry", cfg.RenewJitter, cfg.RenewBefore)
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultManageRate
	}
	if cfg.Rate < 0 {
		return fmt.Errorf("the rate %v is negative", cfg.Rate)
	}
	cfg.Concurrency = positive(cfg.Concurrency, DefaultManageConcurrency)
	cfg.ResyncInterval = positive(cfg.ResyncInterval, DefaultResyncInterval)
	cfg.StopTimeout = positive(cfg.StopTimeout, DefaultStopTimeout)
	cfg.RequestTimeout = positive(cfg.RequestTimeout, DefaultRequestTimeout)
	cfg.MaxAttempts = positive(cfg.MaxAttempts, DefaultCountAttempts)
	cfg.RetryWait = positive(cfg.RetryWait, DefaultRetryWait)
	cfg.MaxRetryWait = positive(cfg.MaxRetryWait, DefaultMaxRetryWait)
	cfg.ErrorBackoff = positive(cfg.ErrorBackoff, DefaultErrorBackoff)
	cfg.MaxErrorBackoff = positive(cfg.MaxErrorBackoff, DefaultMaxErrorBackoff)
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: counterTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = service.Sleep
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	return nil
}

// positive is v, or def when v is not positive.
func positive[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// checkHTTPURL checks that u is an absolute http(s) URL; a query is
// allowed when query is true (the key of an endpoint).
func checkHTTPURL(what, u string, query bool) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || p.Fragment != "" || (!query && p.RawQuery != "") {
		return fmt.Errorf("the %s %q is not an http(s) URL", what, u)
	}
	return nil
}

// Run keeps the subscriptions until ctx ends: it loads the store,
// reconciles it with the directory (keeping the valid subscriptions,
// creating the missing and the expired ones, deleting those of users no
// longer listed), then renews, recreates and deletes as needed, reading
// the directory again every ResyncInterval and then deleting the
// subscriptions to its endpoint that it does not keep (orphans). It returns nil when ctx ends
// (after DeleteOnStop's deletions), or the error that kept it from
// loading the store or the directory.
//
// Run may be called again after it returned (the lease of a standby
// ingest, see broker.Lease): each Run starts from the store.
func (m *Manager) Run(ctx context.Context) error {
	defer m.unload()
	if err := m.load(ctx); err != nil {
		return err
	}
	resyncAt := m.cfg.Now().Add(m.cfg.ResyncInterval)
	for {
		m.dispatch(ctx)
		wait := m.tend()
		now := m.cfg.Now()
		if !now.Before(resyncAt) {
			m.resync(ctx)
			m.sweep(ctx)
			resyncAt = now.Add(m.cfg.ResyncInterval)
		}
		wait = min(wait, resyncAt.Sub(now))
		select {
		case <-ctx.Done():
			m.workers.Wait()
			if m.cfg.DeleteOnStop && errors.Is(context.Cause(ctx), context.Canceled) {
				m.deleteAll(ctx)
			}
			m.tend()
			m.cfg.Log.Info().Msg("stopped managing Graph subscriptions")
			return nil
		case <-m.wake:
		case <-m.cfg.After(wait):
		}
	}
}

// load reads the store and the directory; lifecycle notifications are
// answered 503 until it is done.
func (m *Manager) load(ctx context.Context) error {
	stored, err := m.cfg.Store.List(ctx)
	if err != nil && !errors.Is(err, ErrBadSubscriptionRecord) {
		return fmt.Errorf("loading the Graph subscriptions: %w", err)
	}
	if err != nil {
		m.cfg.Log.Error().Err(err).Msg("some stored Graph subscriptions are unreadable: their users get new ones")
	}
	users, err := m.cfg.Users.ListUsers(ctx)
	if err != nil {
		return fmt.Errorf("listing the users to subscribe for: %w", err)
	}
	m.mu.Lock()
	clear(m.entries)
	clear(m.bySub)
	for key, st := range stored {
		m.entries[key] = &entry{key: key, state: &st, stored: true,
			user: ManagedUser{Tenant: st.Tenant, Address: st.User, UserRef: UserRef{ID: st.UserID}}}
		m.bySub[st.SubscriptionID] = key
	}
	skipped := m.applyUsers(users)
	m.loaded = true
	managed := m.count(func(e *entry) bool { return e.managed })
	m.lastProgress = m.cfg.Now()
	m.mu.Unlock()
	m.cfg.Log.Info().Int("stored", len(stored)).Int("users", managed).Int("skipped_users", skipped).
		Dur("lifetime", m.cfg.Lifetime).Float64("rate", m.cfg.Rate).Msg("managing Graph subscriptions")
	return nil
}

// resync reads the directory again; a directory that cannot be read
// leaves everything as it is.
func (m *Manager) resync(ctx context.Context) {
	users, err := m.cfg.Users.ListUsers(ctx)
	if err != nil {
		m.cfg.Log.Warn().Err(err).Msg("could not list the users to subscribe for; keeping the subscriptions as they are")
		return
	}
	m.mu.Lock()
	m.applyUsers(users)
	m.mu.Unlock()
	m.signal()
}

// unload forgets what Run loaded when it returns: until the next Run
// loads the store again, notifications about subscriptions are answered
// as before the first (retry later).
// Its gauges go to zero: another process may keep the subscriptions now.
func (m *Manager) unload() {
	m.mu.Lock()
	m.loaded = false
	m.mu.Unlock()
	m.metrics.subscriptions.WithLabelValues("managed").Set(0)
	m.metrics.subscriptions.WithLabelValues("active").Set(0)
	m.metrics.nextExpiry.Set(0)
}

// sweep deletes the orphan subscriptions (sweepOrphans); what fails is
// logged and tried again at the next resync.
func (m *Manager) sweep(ctx context.Context) {
	if _, err := m.sweepOrphans(ctx); err != nil && ctx.Err() == nil {
		m.cfg.Log.Warn().Err(err).Msg("could not look for orphan Graph subscriptions; trying again at the next resync")
	}
}

// signal wakes Run.
func (m *Manager) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// deleteAll deletes every subscription, for DeleteOnStop, within
// StopTimeout of ctx's end.
func (m *Manager) deleteAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StopTimeout)
	defer cancel()
	m.mu.Lock()
	var jobs []job
	for _, e := range m.entries {
		if e.state != nil && !e.busy {
			e.busy = true
			m.inflight++
			jobs = append(jobs, job{key: e.key, act: actDelete, user: e.user, old: e.state})
		}
	}
	m.mu.Unlock()
	sem := make(chan struct{}, m.cfg.Concurrency)
	for _, j := range jobs {
		sem <- struct{}{}
		m.workers.Go(func() {
			defer func() { <-sem }()
			m.work(ctx, j)
		})
	}
	m.workers.Wait()
	m.cfg.Log.Info().Int("subscriptions", len(jobs)).Msg("deleted the Graph subscriptions on stopping")
}
