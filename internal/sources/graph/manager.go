package graph

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/sources/manage"
)

// Manager defaults.
const (
	// DefaultManageRate is how many management requests (create, renew,
	// delete) the Manager sends Graph a second: 10,000 users are
	// subscribed in about 17 minutes.
	DefaultManageRate = manage.DefaultRate
	// DefaultManageConcurrency bounds the requests in flight: a create
	// waits for Graph to validate both URLs, which takes a while.
	DefaultManageConcurrency = manage.DefaultConcurrency
	// DefaultResyncInterval is how often the directory is read again.
	DefaultResyncInterval = 10 * time.Minute
	// DefaultStopTimeout bounds the deletions of DeleteOnStop.
	DefaultStopTimeout = 30 * time.Second
	// DefaultRequestTimeout bounds one management request.
	DefaultRequestTimeout = manage.DefaultRequestTimeout
	// DefaultErrorBackoff is the wait after a failed operation; it
	// doubles with each further failure up to DefaultMaxErrorBackoff.
	DefaultErrorBackoff    = manage.DefaultErrorBackoff
	DefaultMaxErrorBackoff = manage.DefaultMaxErrorBackoff
	// ProgressInterval is how often a log line reports the progress of
	// the creations.
	ProgressInterval = manage.ProgressInterval
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
	// Options are the settings every subscription manager has: the
	// client (the Counter's may be shared), the rate (management
	// requests), the retries of a throttled request (DefaultCountAttempts,
	// DefaultRetryWait, DefaultMaxRetryWait when 0), the clock, the log
	// (also a line per lifecycle notification) and the metrics.
	manage.Options
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
	metrics          *managerMetrics
	core             *core

	pauseMu sync.Mutex
	// pauseUntil holds every request while Graph asks to wait.
	pauseUntil time.Time
}

// The Manager's instances of the manage types.
type (
	core  = manage.Core[ManagedUser, SubscriptionState, urgency, jobNotes]
	entry = manage.Entry[ManagedUser, SubscriptionState, urgency]
	job   = manage.Job[ManagedUser, SubscriptionState, jobNotes]
)

// NewManager checks cfg and registers the metrics.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("configuring the Graph subscription manager: %w", err)
	}
	states, err := newClientStates(cfg.ClientStates)
	if err != nil {
		return nil, fmt.Errorf("configuring the Graph subscription manager: %w", err)
	}
	met, err := newManagerMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg: cfg,
		http: &graphClient{tokens: cfg.Tokens, client: cfg.Client, retryWait: cfg.RetryWait,
			maxRetryWait: cfg.MaxRetryWait, sleep: cfg.Sleep, now: cfg.Now},
		subscriptionsURL: strings.TrimRight(cfg.APIURL, "/") + "/subscriptions",
		states:           states,
		urlVersion:       shortHash("pushproxy graph urls", cfg.NotificationURL+"\x00"+cfg.LifecycleURL+"\x00"+SubscriptionChangeTypes),
		key:              sources.NewURLKey(cfg.Key),
		metrics:          met,
	}
	m.core = manage.New(manage.Config[ManagedUser, SubscriptionState, urgency, jobNotes]{
		Options: cfg.Options, Store: cfg.Store, BadRecord: ErrBadSubscriptionRecord, ListInterval: cfg.ResyncInterval, Policy: policy{m},
		Words: manage.Words{Subscriptions: "Graph subscriptions", Users: "the users to subscribe for", Operation: "a Graph subscription operation",
			Unreadable: "some stored Graph subscriptions are unreadable: their users get new ones",
			Made:       "created", ToMake: "to_create", Making: "creating Graph subscriptions"},
		Relisted: m.sweep, Stopping: m.stopping,
	})
	return m, nil
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
	if err := cfg.Options.Defaults(manage.Retries{MaxAttempts: DefaultCountAttempts, RetryWait: DefaultRetryWait, MaxRetryWait: DefaultMaxRetryWait}); err != nil {
		return err
	}
	cfg.ResyncInterval = manage.Positive(cfg.ResyncInterval, DefaultResyncInterval)
	cfg.StopTimeout = manage.Positive(cfg.StopTimeout, DefaultStopTimeout)
	return nil
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
func (m *Manager) Run(ctx context.Context) error { return m.core.Run(ctx) }

// sweep deletes the orphan subscriptions (sweepOrphans); what fails is
// logged and tried again at the next resync.
func (m *Manager) sweep(ctx context.Context) {
	if _, err := m.sweepOrphans(ctx); err != nil && ctx.Err() == nil {
		m.cfg.Log.Warn().Err(err).Msg("could not look for orphan Graph subscriptions; trying again at the next resync")
	}
}

// stopping deletes every subscription, for DeleteOnStop, within
// StopTimeout of ctx's end; unless ctx ended with a cause other than
// context.Canceled (a lost lease: another process manages them now).
func (m *Manager) stopping(ctx context.Context) {
	if !m.cfg.DeleteOnStop || !errors.Is(context.Cause(ctx), context.Canceled) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StopTimeout)
	defer cancel()
	n := m.core.Each(ctx, actDelete, func(e *entry) bool { return e.State != nil })
	m.cfg.Log.Info().Int("subscriptions", n).Msg("deleted the Graph subscriptions on stopping")
}
