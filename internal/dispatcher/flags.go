package dispatcher

import (
	"flag"

	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/relayclient"
)

// Flags registers the dispatcher's tunables on fs and returns the Config
// they fill, starting from the defaults. It leaves out the NATS connection,
// the token source, the registry and the logger, which the command sets.
func Flags(fs *flag.FlagSet) *Config {
	c := Config{}.WithDefaults()
	c.Relay = relayclient.Config{
		Timeout:            relayclient.DefaultTimeout,
		BreakerFailures:    relayclient.DefaultBreakerFailures,
		BreakerCooldown:    relayclient.DefaultBreakerCooldown,
		BreakerMaxCooldown: relayclient.DefaultBreakerMaxCooldown,
	}
	fs.DurationVar(&c.Coalesce.Window, "window", coalesce.DefaultWindow, "how long new mail waits for more changes before its push goes out, counted from when ingest received it while the dispatchers keep up")
	fs.DurationVar(&c.Coalesce.Debounce, "debounce", coalesce.DefaultDebounce, "how long after the last read or deleted message a lower count is pushed")
	fs.DurationVar(&c.Coalesce.MaxDelay, "max-delay", coalesce.DefaultMaxDelay, "longest a change waits for its push, however busy the mailbox")
	fs.StringVar(&c.Unread.Mailbox, "mailbox", "INBOX", "mailbox whose unread messages the badge counts")

	fs.StringVar(&c.InstanceID, "instance-id", "", "name of this dispatcher among the others (default: host name and a random suffix)")
	fs.StringVar(&c.MembershipSubject, "membership-subject", c.MembershipSubject, "NATS subject the dispatchers announce themselves on to share out the partitions")
	fs.DurationVar(&c.Heartbeat, "heartbeat", c.Heartbeat, "how often this dispatcher announces itself; one silent for three heartbeats is gone and its partitions move")
	fs.StringVar(&c.ConsumerPrefix, "consumer-prefix", c.ConsumerPrefix, "durable consumer names: <prefix>-p<partition>")
	fs.DurationVar(&c.AckWait, "ack-wait", c.AckWait, "how long an event may stay unacknowledged before the server redelivers it (held events are kept alive)")
	fs.IntVar(&c.MaxDeliver, "max-deliver", c.MaxDeliver, "deliveries of an event before the server gives up and raises a MAX_DELIVERIES advisory")
	fs.IntVar(&c.DeviceCacheUsers, "device-cache-users", c.DeviceCacheUsers, "most users whose devices are held in memory (about 1 KB each with one device); others are read from the subscriptions bucket when they get mail")
	fs.IntVar(&c.MaxAckPending, "max-ack-pending", c.MaxAckPending, "most unacknowledged events per partition (and most held while coalescing)")
	fs.DurationVar(&c.PinnedTTL, "pinned-ttl", c.PinnedTTL, "how long a partition stays with a dispatcher that stopped pulling before another may take it")
	fs.IntVar(&c.FetchBatch, "fetch-batch", c.FetchBatch, "events pulled at once per partition")
	fs.IntVar(&c.BreakerHold, "breaker-hold", c.BreakerHold, "most events a partition holds while the relay is down; it stops pulling beyond that")

	fs.IntVar(&c.BatchSize, "batch-size", c.BatchSize, "most notifications in one relay request")
	fs.DurationVar(&c.BatchLinger, "batch-linger", c.BatchLinger, "how long a relay request waits for more notifications")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", c.MaxInFlight, "most relay requests at once")
	fs.DurationVar(&c.Relay.Timeout, "relay-timeout", c.Relay.Timeout, "time limit of one relay request")
	c.Retry = delivery.Policy{InitialInterval: delivery.DefaultInitialInterval, MaxInterval: delivery.DefaultMaxInterval, MaxElapsedTime: delivery.DefaultMaxElapsedTime}
	fs.DurationVar(&c.Retry.InitialInterval, "retry-initial", c.Retry.InitialInterval, "first wait before retrying a failed relay request (exponential, jittered)")
	fs.DurationVar(&c.Retry.MaxInterval, "retry-max-interval", c.Retry.MaxInterval, "longest wait between retries, unless the relay asks for more")
	fs.DurationVar(&c.Retry.MaxElapsedTime, "retry-max-elapsed", c.Retry.MaxElapsedTime, "how long a push is retried while the relay is up before it is dead-lettered (waiting for a relay that asked us to back off does not count)")
	fs.IntVar(&c.Relay.BreakerFailures, "breaker-failures", c.Relay.BreakerFailures, "consecutive relay failures that open the circuit breaker (negative: never)")
	fs.DurationVar(&c.Relay.BreakerCooldown, "breaker-cooldown", c.Relay.BreakerCooldown, "how long the open breaker waits before a trial request (doubles while failing)")
	fs.DurationVar(&c.RetryDelay, "requeue-delay", c.RetryDelay, "first wait before a push held back (relay down, device asked to retry) is tried again; it doubles at each try up to --max-requeue-delay, except where the relay asks for a back-off of its own (its push service down, the organization over its quota there), which is then the wait")
	fs.DurationVar(&c.MaxRetryDelay, "max-requeue-delay", c.MaxRetryDelay, "longest wait before a held-back push is tried again (a back-off the relay asks for aside: a device's, such as its push service's Retry-After, or the organization's at its quota)")
	fs.IntVar(&c.MaxPushRetries, "max-push-retries", c.MaxPushRetries, "times a push whose devices ask for a retry is tried again before it is dead-lettered")

	fs.DurationVar(&c.SettingsInterval, "settings-interval", c.SettingsInterval, "how often the proxy settings (pushctl proxy) are read")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long shutdown waits for pushes in flight; unsettled events are redelivered to another dispatcher")
	return &c
}
