package ews

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/manage"
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
	DefaultManageRate = manage.DefaultRate
	// DefaultManageConcurrency bounds the requests in flight.
	DefaultManageConcurrency = manage.DefaultConcurrency
	// DefaultListInterval is how often the mailbox list is read again.
	DefaultListInterval = 10 * time.Minute
	// DefaultRequestTimeout bounds one request.
	DefaultRequestTimeout = manage.DefaultRequestTimeout
	// DefaultLookupWait bounds how long Lookup waits, for an id it does
	// not know, for the Subscribe requests in flight to be answered.
	DefaultLookupWait = 5 * time.Second
	// DefaultErrorBackoff is the wait after a failed operation; it
	// doubles with each further failure up to DefaultMaxErrorBackoff.
	DefaultErrorBackoff    = manage.DefaultErrorBackoff
	DefaultMaxErrorBackoff = manage.DefaultMaxErrorBackoff
	// ProgressInterval is how often a log line reports the progress of
	// the subscriptions.
	ProgressInterval = manage.ProgressInterval
)

// ManagerConfig configures a Manager. Mailboxes, URL, credentials
// (Tokens, or Username and Password), NotificationURL and Store are
// required.
type ManagerConfig struct {
	// Mailboxes lists the mailboxes to subscribe to (a *MailboxListFile).
	Mailboxes MailboxLister
	// Access is how the EWS server is reached, as for the Counter; a
	// mailbox of a tenant outside Tenants (when set) is skipped.
	Access
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
	// ListInterval is how often Mailboxes is listed again
	// (DefaultListInterval when 0).
	ListInterval time.Duration
	// LookupWait bounds the wait of Lookup for the Subscribe requests in
	// flight (DefaultLookupWait when 0).
	LookupWait time.Duration
	// Options are the settings every subscription manager has: the
	// client, the rate (requests: Subscribe, GetFolder), the retries of a
	// busy server (ErrorServerBusy; DefaultCountAttempts,
	// DefaultRetryWait, DefaultMaxRetryWait when 0), the clock, the log
	// (also a line per gap) and the metrics.
	manage.Options
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
	metrics *managerMetrics
	core    *core

	// Guarded by the core's lock:
	// subscribing holds, by key, a channel closed when the Subscribe
	// operation of that key in flight ends.
	subscribing map[string]chan struct{}
	// lookupWaiters counts the Lookups waiting for subscribing.
	lookupWaiters int
}

// The Manager's instances of the manage types.
type (
	core  = manage.Core[ManagedMailbox, SubscriptionState, inboxNotes, jobNotes]
	entry = manage.Entry[ManagedMailbox, SubscriptionState, inboxNotes]
	job   = manage.Job[ManagedMailbox, SubscriptionState, jobNotes]
)

// NewManager checks cfg and registers the metrics.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("configuring the EWS subscription manager: %w", err)
	}
	tenants, err := cfg.check()
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
		metrics:     met,
		subscribing: map[string]chan struct{}{},
	}
	m.core = manage.New(manage.Config[ManagedMailbox, SubscriptionState, inboxNotes, jobNotes]{
		Options: cfg.Options, Store: cfg.Store, BadRecord: ErrBadSubscriptionRecord, ListInterval: cfg.ListInterval, Policy: policy{m},
		Words: manage.Words{Subscriptions: "EWS subscriptions", Users: "the mailboxes to subscribe to", Operation: "an EWS subscription operation",
			Unreadable: "some stored EWS subscriptions are unreadable: their mailboxes are subscribed afresh",
			Made:       "subscribed", ToMake: "to_subscribe", Making: "subscribing EWS mailboxes"},
	})
	met.frequency.Set(cfg.StatusFrequency.Seconds())
	m.soap = &soapClient{url: cfg.URL, tokens: cfg.Tokens, username: cfg.Username, password: cfg.Password,
		impersonate: cfg.Impersonate || cfg.Tokens != nil, client: cfg.Client, maxAttempts: cfg.MaxAttempts,
		retryWait: cfg.RetryWait, maxRetryWait: cfg.MaxRetryWait, sleep: cfg.Sleep, now: cfg.Now, log: cfg.Log,
		who: "the subscription manager", gate: m.core.Wait, finish: cfg.RequestTimeout}
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
	if u, err := url.Parse(cfg.NotificationURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("the notification URL %q is not an http(s) URL", cfg.NotificationURL)
	}
	if cfg.StatusFrequency == 0 {
		cfg.StatusFrequency = DefaultStatusFrequency
	}
	if cfg.StatusFrequency%time.Minute != 0 || cfg.StatusFrequency < MinStatusFrequency*time.Minute || cfg.StatusFrequency > MaxStatusFrequency*time.Minute {
		return fmt.Errorf("the status frequency %s is not a whole number of minutes from 1m to 24h", cfg.StatusFrequency)
	}
	if err := cfg.Options.Defaults(manage.Retries{MaxAttempts: DefaultCountAttempts, RetryWait: DefaultRetryWait, MaxRetryWait: DefaultMaxRetryWait}); err != nil {
		return err
	}
	cfg.SilenceMargin = manage.Positive(cfg.SilenceMargin, DefaultSilenceMargin)
	cfg.ListInterval = manage.Positive(cfg.ListInterval, DefaultListInterval)
	cfg.LookupWait = manage.Positive(cfg.LookupWait, DefaultLookupWait)
	var err error
	cfg.Client, err = authClient(cfg.Client, cfg.NTLM, cfg.Concurrency)
	return err
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
func (m *Manager) Run(ctx context.Context) error { return m.core.Run(ctx) }
