package dispatcher

import (
	"errors"
	"fmt"
	"time"

	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/dispatcher/badges"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// Defaults of Config.
const (
	DefaultConsumerPrefix    = "dispatcher"
	DefaultPriorityGroup     = "dispatcher"
	DefaultMembershipSubject = "pushproxy.dispatcher.members"
	DefaultAckWait           = 30 * time.Second
	DefaultMaxDeliver        = 10
	DefaultMaxAckPending     = 20000
	DefaultPinnedTTL         = 15 * time.Second
	DefaultHeartbeat         = time.Second
	DefaultFetchBatch        = 500
	DefaultBreakerHold       = 5000
	DefaultBatchSize         = 100
	DefaultBatchLinger       = 2 * time.Millisecond
	DefaultMaxInFlight       = 4
	DefaultRetryDelay        = time.Second
	DefaultMaxRetryDelay     = 30 * time.Second
	DefaultMaxPushRetries    = 5
	DefaultSettingsInterval  = 5 * time.Second
	DefaultMetricsInterval   = 5 * time.Second
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultIOConcurrency     = 32
	DefaultCacheIdle         = time.Minute
	DefaultMaxCachedUsers    = 100000
)

// Config configures Run. Zero fields take the defaults.
type Config struct {
	// Coalesce holds the coalescing timers (window, debounce, max delay).
	Coalesce coalesce.Config
	// Unread says which mailbox is counted (the Inbox by default).
	Unread unread.Options

	// Tokens gives the S2S bearer token of each relay request. It is
	// required unless Publisher is set; it replaces Relay.Tokens.
	Tokens relayclient.TokenSource
	// Relay configures the relay client built when Publisher is nil:
	// timeouts, retries (backoff) and the circuit breaker.
	Relay relayclient.Config
	// Retry is the retry policy of a relay request (exponential, jittered,
	// capped; waits the relay asks for do not count toward it).
	Retry delivery.Policy
	// Publisher, when set, is used instead of a relay client built from
	// Relay and Tokens (pushctl standalone shares one; tests use their own).
	Publisher Publisher

	// ConsumerPrefix names the durable consumers: <prefix>-p<partition>.
	ConsumerPrefix string
	// PriorityGroup is the consumers' pinned priority group.
	PriorityGroup string
	// AckWait is how long a delivered event may stay unacknowledged before
	// the server delivers it again; held events are kept alive with
	// in-progress acks well before that.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of an event; the last one raises a
	// MAX_DELIVERIES advisory.
	MaxDeliver int
	// MaxAckPending bounds the unacknowledged events of a partition; it is
	// also the most events a partition holds while coalescing.
	MaxAckPending int
	// DeviceCacheUsers bounds the users whose subscriptions the dispatcher
	// holds in memory (subscriptions.DefaultCacheUsers when 0); others are
	// read from the bucket when they get mail.
	DeviceCacheUsers int
	// PinnedTTL is how long a partition stays pinned to a dispatcher that
	// stopped pulling before another may take it.
	PinnedTTL time.Duration

	// MembershipSubject is the core NATS subject dispatchers announce
	// themselves on to share out the partitions.
	MembershipSubject string
	// Heartbeat is how often a dispatcher announces itself; one not heard
	// for three heartbeats is gone.
	Heartbeat time.Duration
	// InstanceID names this dispatcher among the others; random when empty.
	InstanceID string

	// FetchBatch is how many events a partition pulls at once.
	FetchBatch int
	// BreakerHold is how many events a partition holds at most while the
	// relay is unhealthy; it stops pulling beyond that.
	BreakerHold int

	// BatchSize bounds the notifications of one relay request.
	BatchSize int
	// BatchLinger is how long a request waits for more notifications.
	BatchLinger time.Duration
	// MaxInFlight bounds the concurrent relay requests.
	MaxInFlight int
	// RetryDelay is the first wait before a push that could not be sent
	// (relay down, device asked to retry) is tried again; it doubles up to
	// MaxRetryDelay. A back-off the relay asked for a device replaces it
	// (never shorter than RetryDelay).
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// MaxPushRetries bounds how often a push whose devices asked for a
	// retry is tried again before it is dead-lettered.
	MaxPushRetries int

	// SettingsInterval is how often the proxy settings are read.
	SettingsInterval time.Duration
	// MetricsInterval is how often consumer info feeds the pending gauges.
	MetricsInterval time.Duration
	// ShutdownTimeout bounds the flush of due pushes at shutdown and at a
	// partition hand-over; what is not settled by then is left for
	// redelivery.
	ShutdownTimeout time.Duration
	// IOConcurrency bounds the parallel KV and stream writes of a partition.
	IOConcurrency int
	// CacheIdle is how long a user's state stays cached after its last
	// event; MaxCachedUsers bounds the cache of a partition.
	CacheIdle      time.Duration
	MaxCachedUsers int
	// LibraryDecode decodes every event with events.Decode
	// (encoding/json), without the fast path of decode.go (no flag: the
	// benchmark that weighs the fast path sets it).
	LibraryDecode bool
}

// ErrInvalidConfig is wrapped by the errors of Config.Validate.
var ErrInvalidConfig = errors.New("invalid dispatcher configuration")

// WithDefaults returns c with zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	c.Coalesce = c.Coalesce.WithDefaults()
	str := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	num := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	dur(&c.Relay.BreakerCooldown, relayclient.DefaultBreakerCooldown)
	dur(&c.Relay.BreakerMaxCooldown, relayclient.DefaultBreakerMaxCooldown)
	str(&c.ConsumerPrefix, DefaultConsumerPrefix)
	str(&c.PriorityGroup, DefaultPriorityGroup)
	str(&c.MembershipSubject, DefaultMembershipSubject)
	dur(&c.AckWait, DefaultAckWait)
	num(&c.MaxDeliver, DefaultMaxDeliver)
	num(&c.MaxAckPending, DefaultMaxAckPending)
	num(&c.DeviceCacheUsers, subscriptions.DefaultCacheUsers)
	dur(&c.PinnedTTL, DefaultPinnedTTL)
	dur(&c.Heartbeat, DefaultHeartbeat)
	num(&c.FetchBatch, DefaultFetchBatch)
	num(&c.BreakerHold, DefaultBreakerHold)
	num(&c.BatchSize, DefaultBatchSize)
	dur(&c.BatchLinger, DefaultBatchLinger)
	num(&c.MaxInFlight, DefaultMaxInFlight)
	dur(&c.RetryDelay, DefaultRetryDelay)
	dur(&c.MaxRetryDelay, DefaultMaxRetryDelay)
	num(&c.MaxPushRetries, DefaultMaxPushRetries)
	dur(&c.SettingsInterval, DefaultSettingsInterval)
	dur(&c.MetricsInterval, DefaultMetricsInterval)
	dur(&c.ShutdownTimeout, DefaultShutdownTimeout)
	num(&c.IOConcurrency, DefaultIOConcurrency)
	dur(&c.CacheIdle, DefaultCacheIdle)
	num(&c.MaxCachedUsers, DefaultMaxCachedUsers)
	return c
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	c = c.WithDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if err := c.Coalesce.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	switch {
	case c.AckWait < time.Second:
		return bad("ack wait %s is shorter than a second", c.AckWait)
	case c.PinnedTTL < time.Second:
		return bad("pinned TTL %s is shorter than a second", c.PinnedTTL)
	case c.MaxDeliver < 1 && c.MaxDeliver != -1:
		return bad("max deliver must be positive (or -1 for unlimited), got %d", c.MaxDeliver)
	case c.MaxAckPending < c.FetchBatch:
		return bad("max ack pending %d is smaller than the fetch batch %d", c.MaxAckPending, c.FetchBatch)
	case c.FetchBatch < 1 || c.BreakerHold < 1 || c.MaxInFlight < 1 || c.IOConcurrency < 1 || c.MaxPushRetries < 0 || c.MaxCachedUsers < 1:
		return bad("fetch batch, breaker hold, max in flight, I/O concurrency and max cached users must be positive")
	case c.BatchSize < 1 || c.BatchSize > relayproto.MaxNotificationsPerRequest:
		return bad("batch size must be 1 to %d, got %d", relayproto.MaxNotificationsPerRequest, c.BatchSize)
	case c.Heartbeat <= 0 || c.RetryDelay <= 0 || c.MaxRetryDelay < c.RetryDelay || c.SettingsInterval <= 0 || c.MetricsInterval <= 0 || c.ShutdownTimeout <= 0 || c.BatchLinger < 0 || c.CacheIdle <= 0:
		return bad("intervals and timeouts must be positive, and the max retry delay at least the retry delay")
	case c.Publisher == nil && c.Tokens == nil && c.Relay.Tokens == nil:
		return bad("no S2S token source: the relay would refuse every push")
	}
	return nil
}

// ledgerPolicy is what a partition's ledger of users (package badges)
// takes from the configuration.
func (c Config) ledgerPolicy() badges.Policy {
	return badges.Policy{Unread: c.Unread, Coalesce: c.Coalesce, RetryDelay: c.RetryDelay, MaxRetryDelay: c.MaxRetryDelay,
		RelayCooldown: c.Relay.BreakerMaxCooldown, MaxPushRetries: c.MaxPushRetries}
}
