package ews

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/pushproxy/pushproxy/internal/service"
)

// Manager defaults.
const (
	// DefaultStatusFrequency is the StatusFrequency of the subscriptions:
	// Exchange sends a StatusEvent after that long without events, and
	// gives a subscription up after failing to deliver for that long.
	DefaultStatusFrequency = 30 * time.Minute
	// DefaultSilenceMargin is added to twice the StatusFrequency before a
	// silent subscription is taken for dead.
	DefaultSilenceMargin = 2 * time.Minute
	// DefaultManageRate is how many requests (Subscribe, GetFolder) the
	// Manager sends EWS a second.
	DefaultManageRate = 10
	// DefaultManageConcurrency bounds the requests in flight.
	DefaultManageConcurrency = 8
	// DefaultListInterval is how often the mailbox list is read again.
	DefaultListInterval = 10 * time.Minute
	// DefaultRequestTimeout bounds one request.
	DefaultRequestTimeout = time.Minute
	// DefaultLookupWait bounds how long Lookup waits, for an id it does
	// not know, for the Subscribe requests in flight to be answered.
	DefaultLookupWait = 5 * time.Second
	// DefaultErrorBackoff is the wait after a failed operation; it
	// doubles with each further failure up to DefaultMaxErrorBackoff.
	DefaultErrorBackoff    = time.Minute
	DefaultMaxErrorBackoff = time.Hour
	// ProgressInterval is how often a log line reports the progress of
	// the subscriptions.
	ProgressInterval = 10 * time.Second
)

// ManagerConfig configures a Manager. Mailboxes, URL, credentials
// (Tokens, or Username and Password), NotificationURL and Store are
// required.
type ManagerConfig struct {
	// Mailboxes lists the mailboxes to subscribe to (a *MailboxListFile).
	Mailboxes MailboxLister
	// URL, Tenants, Tokens, Username, Password, NTLM and Impersonate are
	// how the EWS server is reached, as for the Counter (CounterConfig); a
	// mailbox of a tenant outside Tenants (when set) is skipped.
	URL         string
	Tenants     []string
	Tokens      TokenSource
	Username    string
	Password    string
	NTLM        bool
	Impersonate bool
	// Client sends the requests; a client with a one-minute timeout when
	// nil.
	Client *http.Client
	// NotificationURL is where Exchange posts the notifications: ingest's
	// EWS endpoint with its key, e.g. https://push.example.com/v1/ews?key=...
	NotificationURL string
	// StatusFrequency is asked of each subscription, whole minutes from
	// 1m to 24h (DefaultStatusFrequency when 0). A subscription that
	// sends nothing for twice as long plus SilenceMargin
	// (DefaultSilenceMargin when 0) is created again.
	StatusFrequency time.Duration
	SilenceMargin   time.Duration
	// Store keeps the subscriptions across restarts.
	Store SubscriptionStore
	// Resync, when set, is called with the tenant and address of a
	// mailbox whose events may have been missed: its subscription could
	// not be resumed from its watermark (refused, or none known) and was
	// made anew. Wire it to the reconciler so that the count is read
	// exactly. It runs on an operation's goroutine.
	Resync func(ctx context.Context, tenant, user string)
	// Rate is the most requests a second (DefaultManageRate when 0);
	// Concurrency the most operations in flight
	// (DefaultManageConcurrency when 0).
	Rate        float64
	Concurrency int
	// ListInterval is how often Mailboxes is listed again
	// (DefaultListInterval when 0).
	ListInterval time.Duration
	// RequestTimeout bounds one request (DefaultRequestTimeout when 0). A
	// request in flight is finished even when Run's context ends, so
	// that a subscription made is not lost track of.
	RequestTimeout time.Duration
	// LookupWait bounds the wait of Lookup for the Subscribe requests in
	// flight (DefaultLookupWait when 0).
	LookupWait time.Duration
	// MaxAttempts, RetryWait and MaxRetryWait bound the retries of a busy
	// server, as for the Counter (DefaultCountAttempts, DefaultRetryWait,
	// DefaultMaxRetryWait when 0). While EWS asks to wait, every request
	// of the Manager waits.
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
	// Log receives a line per operation that fails, per gap, and the
	// progress of the subscriptions.
	Log zerolog.Logger
	// Metrics, when set, receives the manager's metrics.
	Metrics prometheus.Registerer
}

// Manager keeps one EWS push subscription on the Inbox of each mailbox of
// a list. It reads each Inbox's folder id once (GetFolder), subscribes
// (Subscribe with a PushSubscriptionRequest to NotificationURL), and
// keeps in a SubscriptionStore the subscription id, the newest watermark
// and when it was last heard of.
//
// A push subscription cannot be asked whether it still lives: Exchange
// keeps it in the memory of a Client Access server, offers no operation
// to read it (Unsubscribe and GetEvents are for pull and streaming
// subscriptions), and ends it silently when that server restarts or
// when deliveries failed for a StatusFrequency. So the Manager makes it
// again, from its last watermark so that no event is missed, whenever it
// may be gone: on start (the process was away, deliveries may have
// failed), when nothing came for twice the StatusFrequency (a StatusEvent
// comes at least that often), and when a notification reports an error.
// When Exchange refuses the watermark (older than about 30 days, or
// expired) it subscribes without one and calls Resync. An older
// subscription of the mailbox that still delivers is answered
// Unsubscribe: Lookup knows only the current one. Mailboxes that leave
// the list are dropped from the store; their subscriptions are answered
// Unsubscribe at their next notification.
//
// The Manager is the source's SubscriptionRegistry (Config.Subscriptions)
// and must be told of what the source accepts: set Config.Observe to
// Observe and Config.OnSubscriptionError to OnSubscriptionError. Run it
// in one process only: two Managers on one store would answer each
// other's subscriptions Unsubscribe.
type Manager struct {
	cfg     ManagerConfig
	soap    *soapClient
	tenants []string
	freq    int
	limiter *rate.Limiter
	metrics *managerMetrics
	// wake tells Run that there may be work: a notification, a finished
	// operation.
	wake chan struct{}
	// workers are the operations in flight.
	workers sync.WaitGroup

	mu      sync.Mutex
	loaded  bool
	entries map[string]*entry
	// bySub finds the key of a subscription id.
	bySub map[string]string
	// subscribing holds, by key, a channel closed when the Subscribe
	// operation of that key in flight ends.
	subscribing map[string]chan struct{}
	// lookupWaiters counts the Lookups waiting for subscribing.
	lookupWaiters int
	inflight      int
	// subscribed counts subscriptions made since the last progress
	// line, at lastProgress.
	subscribed   int
	lastProgress time.Time
}

// NewManager checks cfg and registers the metrics.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("configuring the EWS subscription manager: %w", err)
	}
	tenants, err := checkTenants(cfg.Tenants)
	if err != nil {
		return nil, fmt.Errorf("configuring the EWS subscription manager: %w", err)
	}
	met, err := newManagerMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:         cfg,
		tenants:     tenants,
		freq:        int(cfg.StatusFrequency / time.Minute),
		limiter:     rate.NewLimiter(rate.Limit(cfg.Rate), 1),
		metrics:     met,
		wake:        make(chan struct{}, 1),
		entries:     map[string]*entry{},
		bySub:       map[string]string{},
		subscribing: map[string]chan struct{}{},
	}
	met.frequency.Set(cfg.StatusFrequency.Seconds())
	m.soap = &soapClient{url: cfg.URL, tokens: cfg.Tokens, username: cfg.Username, password: cfg.Password,
		impersonate: cfg.Impersonate || cfg.Tokens != nil, client: cfg.Client, maxAttempts: cfg.MaxAttempts,
		retryWait: cfg.RetryWait, maxRetryWait: cfg.MaxRetryWait, sleep: cfg.Sleep, now: cfg.Now, log: cfg.Log,
		who: "the subscription manager", gate: m.limiter.Wait, finish: cfg.RequestTimeout}
	return m, nil
}

// defaults checks the required settings and fills in the others.
func (cfg *ManagerConfig) defaults() error {
	switch {
	case cfg.Mailboxes == nil:
		return errors.New("a mailbox list is required")
	case cfg.Store == nil:
		return errors.New("a subscription store is required")
	}
	if err := checkAccess(cfg.URL, cfg.Tokens, cfg.Username, cfg.Password, cfg.NTLM); err != nil {
		return err
	}
	if u, err := url.Parse(cfg.NotificationURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("the notification URL %q is not an http(s) URL", cfg.NotificationURL)
	}
	if cfg.StatusFrequency == 0 {
		cfg.StatusFrequency = DefaultStatusFrequency
	}
	if cfg.StatusFrequency%time.Minute != 0 || cfg.StatusFrequency < MinStatusFrequency*time.Minute || cfg.StatusFrequency > MaxStatusFrequency*time.Minute {
		return fmt.Errorf("the status frequency %s is not a whole number of minutes from 1m to 24h", cfg.StatusFrequency)
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultManageRate
	}
	if cfg.Rate < 0 {
		return fmt.Errorf("the rate %v is negative", cfg.Rate)
	}
	cfg.SilenceMargin = positive(cfg.SilenceMargin, DefaultSilenceMargin)
	cfg.Concurrency = positive(cfg.Concurrency, DefaultManageConcurrency)
	cfg.ListInterval = positive(cfg.ListInterval, DefaultListInterval)
	cfg.RequestTimeout = positive(cfg.RequestTimeout, DefaultRequestTimeout)
	cfg.LookupWait = positive(cfg.LookupWait, DefaultLookupWait)
	cfg.MaxAttempts = positive(cfg.MaxAttempts, DefaultCountAttempts)
	cfg.RetryWait = positive(cfg.RetryWait, DefaultRetryWait)
	cfg.MaxRetryWait = positive(cfg.MaxRetryWait, DefaultMaxRetryWait)
	cfg.ErrorBackoff = positive(cfg.ErrorBackoff, DefaultErrorBackoff)
	cfg.MaxErrorBackoff = positive(cfg.MaxErrorBackoff, DefaultMaxErrorBackoff)
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: counterTimeout}
	}
	var err error
	if cfg.Client, err = authClient(cfg.Client, cfg.NTLM, cfg.Concurrency); err != nil {
		return err
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

// Run keeps the subscriptions until ctx ends: it loads the store and the
// mailbox list, subscribes every listed mailbox again from its stored
// watermark (and the new ones afresh), drops the mailboxes no longer
// listed, then subscribes again whenever a subscription falls silent or
// reports an error, reading the list again every ListInterval. It
// returns nil when ctx ends, or the error that kept it from loading the
// store or the list. The subscriptions outlive it: Exchange keeps
// delivering, and the next Run subscribes again.
//
// Run may be called again after it returned (the lease of a standby
// ingest, see broker.Lease): each Run starts from the store.
func (m *Manager) Run(ctx context.Context) error {
	defer m.unload()
	if err := m.load(ctx); err != nil {
		return err
	}
	listAt := m.cfg.Now().Add(m.cfg.ListInterval)
	for {
		m.dispatch(ctx)
		wait := m.tend()
		now := m.cfg.Now()
		if !now.Before(listAt) {
			m.relist(ctx)
			listAt = now.Add(m.cfg.ListInterval)
		}
		wait = min(wait, listAt.Sub(now))
		select {
		case <-ctx.Done():
			m.workers.Wait()
			m.tend()
			m.cfg.Log.Info().Msg("stopped managing EWS subscriptions")
			return nil
		case <-m.wake:
		case <-m.cfg.After(wait):
		}
	}
}

// load reads the store and the mailbox list. Every stored subscription
// of a listed mailbox is due to be made again (a restart gap); Lookup
// answers with a retryable error until it is done.
func (m *Manager) load(ctx context.Context) error {
	stored, err := m.cfg.Store.List(ctx)
	if err != nil && !errors.Is(err, ErrBadSubscriptionRecord) {
		return fmt.Errorf("loading the EWS subscriptions: %w", err)
	}
	if err != nil {
		m.cfg.Log.Error().Err(err).Msg("some stored EWS subscriptions are unreadable: their mailboxes are subscribed afresh")
	}
	boxes, err := m.cfg.Mailboxes.ListMailboxes(ctx)
	if err != nil {
		return fmt.Errorf("listing the mailboxes to subscribe to: %w", err)
	}
	m.mu.Lock()
	clear(m.entries)
	clear(m.bySub)
	for key, st := range stored {
		m.entries[key] = &entry{key: key, state: &st, stored: true, inbox: st.InboxFolderID,
			mailbox: ManagedMailbox{Tenant: st.Tenant, User: st.User}}
		m.bySub[st.SubscriptionID] = key
	}
	skipped := m.applyMailboxes(boxes)
	restarts := 0
	for _, e := range m.entries {
		if e.managed && e.state != nil {
			e.gap = gapRestart
			restarts++
		}
	}
	m.loaded = true
	managed := m.count(func(e *entry) bool { return e.managed })
	m.lastProgress = m.cfg.Now()
	m.mu.Unlock()
	m.metrics.gaps.WithLabelValues(string(gapRestart)).Add(float64(restarts))
	m.cfg.Log.Info().Int("stored", len(stored)).Int("mailboxes", managed).Int("skipped_mailboxes", skipped).
		Int("status_frequency_minutes", m.freq).Float64("rate", m.cfg.Rate).
		Msg("managing EWS push subscriptions: subscribing every mailbox again, from its stored watermark")
	return nil
}

// relist reads the mailbox list again; a list that cannot be read leaves
// everything as it is.
func (m *Manager) relist(ctx context.Context) {
	boxes, err := m.cfg.Mailboxes.ListMailboxes(ctx)
	if err != nil {
		m.cfg.Log.Warn().Err(err).Msg("could not list the mailboxes to subscribe to; keeping the subscriptions as they are")
		return
	}
	m.mu.Lock()
	m.applyMailboxes(boxes)
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
	m.metrics.subscriptions.Set(0)
	m.metrics.age.Set(0)
}

// signal wakes Run.
func (m *Manager) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}
