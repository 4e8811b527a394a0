package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/storage"
)

// Names of the streams and key-value buckets of the pushproxy layout.
const (
	StreamMail       = "MAIL"
	StreamDead       = "PUSH_DEAD"
	StreamSent       = "PUSH_SENT"
	StreamAdvisories = "ADVISORIES"
	StreamProbes     = "PROBES"

	BucketUnread        = "unread"
	BucketSubscriptions = "subscriptions"
	BucketConfig        = "config"
	// BucketTombstones keeps, for TombstoneTTL, the subscriptions that a
	// device-gone verdict removed, so that a wrong verdict can be undone.
	BucketTombstones = "tombstones"
	// BucketCredentials holds ingest's scoped credentials (hashed secrets).
	BucketCredentials = "credentials"
	// BucketGraphSubscriptions keeps the Graph subscriptions ingest
	// manages (one per user: id, expiry, last renewal).
	BucketGraphSubscriptions = "graph_subscriptions"
	// BucketEWSSubscriptions keeps the EWS push subscriptions ingest
	// manages (one per mailbox: id, last watermark).
	BucketEWSSubscriptions = "ews_subscriptions"
	// BucketLeases holds the leases (see Lease) of tasks one process of
	// the deployment runs at a time, such as the subscription managers.
	BucketLeases = "leases"
)

// Subject roots of the non-mail streams. A full subject adds tokens, for
// example push.dead.<tenant>.<user>.
const (
	SubjectDead   = "push.dead"
	SubjectSent   = "push.sent"
	SubjectProbes = "probe"
)

// Advisory subjects captured in the ADVISORIES stream. The server only
// emits advisories someone listens to, so the stream is what makes them
// exist at all.
const (
	AdvisoryMaxDeliveries = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + StreamMail + ".*"
	AdvisoryTerminated    = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + StreamMail + ".*"
)

// KeySubjectKey is the config bucket key holding the secret from which user
// tokens in subjects and KV keys are derived (see events.Keyer).
const KeySubjectKey = "subject-key"

// Layout holds the tunables of the streams and buckets.
type Layout struct {
	// Replicas of every stream and bucket: 1 on a single server, 3 on a cluster.
	Replicas int
	// Partitions of the MAIL stream. Changing it on a running system moves
	// users between partitions; drain the stream first.
	Partitions int
	// MailMaxAge is how long events are kept (and so how far back replay reads).
	MailMaxAge time.Duration
	// DuplicateWindow is how long a Nats-Msg-Id is remembered for dedup.
	DuplicateWindow time.Duration
	// SubscriptionTTL is how long a device subscription lives after its last refresh.
	SubscriptionTTL time.Duration
	// DeadMaxAge is how long dead letters and captured advisories are kept.
	DeadMaxAge time.Duration
	// SentMaxAge is how long the record of sent pushes is kept.
	SentMaxAge time.Duration
	// ProbeMaxAge is how long probe and canary results are kept.
	ProbeMaxAge time.Duration
	// TombstoneTTL is how long a subscription removed on a device-gone
	// verdict can still be restored.
	TombstoneTTL time.Duration
	// LeaseTTL is how long a lease outlives its holder's last renewal:
	// the longest a task such as a subscription manager stops when the
	// process running it dies.
	LeaseTTL time.Duration
}

// DefaultLayout is the layout for a single embedded server.
func DefaultLayout() Layout {
	return Layout{
		Replicas:        1,
		Partitions:      8,
		MailMaxAge:      7 * 24 * time.Hour,
		DuplicateWindow: 10 * time.Minute,
		SubscriptionTTL: 72 * time.Hour,
		DeadMaxAge:      14 * 24 * time.Hour,
		SentMaxAge:      24 * time.Hour,
		ProbeMaxAge:     7 * 24 * time.Hour,
		TombstoneTTL:    7 * 24 * time.Hour,
		LeaseTTL:        15 * time.Second,
	}
}

// Validate reports a layout that JetStream would refuse or that breaks the design.
func (l Layout) Validate() error {
	switch {
	case l.Replicas < 1 || l.Replicas > 5:
		return fmt.Errorf("replicas must be 1 to 5, got %d", l.Replicas)
	case l.Partitions < 1 || l.Partitions > 1024:
		return fmt.Errorf("partitions must be 1 to 1024, got %d", l.Partitions)
	case l.DuplicateWindow <= 0 || l.DuplicateWindow > l.MailMaxAge:
		return fmt.Errorf("duplicate window %s must be positive and at most the mail max age %s", l.DuplicateWindow, l.MailMaxAge)
	case l.SubscriptionTTL < time.Minute:
		return fmt.Errorf("subscription TTL %s is shorter than a minute", l.SubscriptionTTL)
	case l.DeadMaxAge <= 0 || l.SentMaxAge <= 0 || l.ProbeMaxAge <= 0:
		return errors.New("dead, sent and probe max ages must be positive")
	case l.TombstoneTTL < time.Minute:
		return fmt.Errorf("tombstone TTL %s is shorter than a minute", l.TombstoneTTL)
	case l.LeaseTTL < time.Second || l.LeaseTTL > 10*time.Minute:
		return fmt.Errorf("lease TTL %s is not between 1s and 10m", l.LeaseTTL)
	}
	return nil
}

// MailPartitionTransform is the destination of the MAIL stream's subject
// transform: mail.<tenant>.<user> is stored as mail.<partition>.<tenant>.<user>.
func (l Layout) MailPartitionTransform() string {
	return fmt.Sprintf("%s.{{partition(%d,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}", events.SubjectPrefix, l.Partitions)
}

// PartitionFilter is the consumer filter subject of one partition.
func PartitionFilter(partition int) string {
	return fmt.Sprintf("%s.%d.>", events.SubjectPrefix, partition)
}

func (l Layout) streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        StreamMail,
			Description: "mailbox change events from ingest",
			Subjects:    []string{events.PublishPattern},
			SubjectTransform: &jetstream.SubjectTransformConfig{
				Source:      events.PublishPattern,
				Destination: l.MailPartitionTransform(),
			},
			Storage:    jetstream.FileStorage,
			Retention:  jetstream.LimitsPolicy,
			MaxAge:     l.MailMaxAge,
			Duplicates: l.DuplicateWindow,
			Replicas:   l.Replicas,
			// Dispatchers check users' states against the stream with
			// direct gets (any replica answers; see internal/dispatcher,
			// gaps.go).
			AllowDirect: true,
		},
		{
			Name:        StreamDead,
			Description: "notifications that could not be delivered",
			Subjects:    []string{SubjectDead + ".>"},
			Storage:     jetstream.FileStorage,
			MaxAge:      l.DeadMaxAge,
			Replicas:    l.Replicas,
		},
		{
			Name:        StreamSent,
			Description: "one record per push sent",
			Subjects:    []string{SubjectSent + ".>"},
			Storage:     jetstream.FileStorage,
			MaxAge:      l.SentMaxAge,
			Replicas:    l.Replicas,
		},
		{
			Name:        StreamAdvisories,
			Description: "max-deliveries and terminated advisories of the MAIL stream",
			Subjects:    []string{AdvisoryMaxDeliveries, AdvisoryTerminated},
			Storage:     jetstream.FileStorage,
			MaxAge:      l.DeadMaxAge,
			Replicas:    l.Replicas,
		},
		{
			Name:        StreamProbes,
			Description: "connectivity probe and canary results",
			Subjects:    []string{SubjectProbes + ".>"},
			Storage:     jetstream.FileStorage,
			MaxAge:      l.ProbeMaxAge,
			Replicas:    l.Replicas,
		},
	}
}

func (l Layout) buckets() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: BucketUnread, Description: "per-user unread state", History: 1, Storage: jetstream.FileStorage, Replicas: l.Replicas},
		{Bucket: BucketSubscriptions, Description: "device subscriptions; each expires unless refreshed", History: 1, TTL: l.SubscriptionTTL, Storage: jetstream.FileStorage, Replicas: l.Replicas},
		{Bucket: BucketConfig, Description: "proxy and auth configuration", History: 5, Storage: jetstream.FileStorage, Replicas: l.Replicas},
		{Bucket: BucketCredentials, Description: "ingest credentials: tenants, roles and hashed secrets", History: 5, Storage: jetstream.FileStorage, Replicas: l.Replicas},
		{Bucket: BucketGraphSubscriptions, Description: "Graph subscriptions ingest creates and renews, one per user", History: 1, Storage: jetstream.FileStorage, Replicas: l.Replicas},
		{Bucket: BucketEWSSubscriptions, Description: "EWS push subscriptions ingest keeps, one per mailbox, with their last watermark", History: 1, Storage: jetstream.FileStorage, Replicas: l.Replicas},
		{Bucket: BucketLeases, Description: "tasks one process runs at a time: who holds each, renewed until it stops", History: 1, TTL: l.LeaseTTL, Storage: jetstream.FileStorage, Replicas: l.Replicas},
		{Bucket: BucketTombstones, Description: "subscriptions removed on a device-gone verdict, restorable until they expire", History: 1, TTL: l.TombstoneTTL, Storage: jetstream.FileStorage, Replicas: l.Replicas},
	}
}

// Provision creates the streams and buckets of the layout, or updates them
// to it; running it again changes nothing. It also makes sure the subject
// key exists. When it creates the installation (none of the config,
// unread and subscriptions buckets existed), it records the compact
// encoding in the storage settings (storage.InitNew).
func Provision(ctx context.Context, js jetstream.JetStream, l Layout) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("checking layout: %w", err)
	}
	fresh, err := newInstallation(ctx, js)
	if err != nil {
		return err
	}
	for _, cfg := range l.streams() {
		if err := whilePlacing(ctx, func() error {
			_, err := js.CreateOrUpdateStream(ctx, cfg)
			return err
		}); err != nil {
			return fmt.Errorf("provisioning stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range l.buckets() {
		if err := whilePlacing(ctx, func() error {
			_, err := js.CreateOrUpdateKeyValue(ctx, cfg)
			return err
		}); err != nil {
			return fmt.Errorf("provisioning bucket %s: %w", cfg.Bucket, err)
		}
	}
	if _, err := SubjectKey(ctx, js); err != nil {
		return err
	}
	if fresh {
		kv, err := js.KeyValue(ctx, BucketConfig)
		if err != nil {
			return fmt.Errorf("opening bucket %s: %w", BucketConfig, err)
		}
		return storage.InitNew(ctx, kv, time.Now())
	}
	return nil
}

// placementWait bounds how long Provision waits for a cluster to place a
// stream or bucket: right after its servers start, the meta leader may not
// have heard from every one yet and answers that it has no suitable peers
// ("peer offline"), for a moment.
const placementWait = 30 * time.Second

// errCodeClusterNoPeers is JetStream's "no suitable peers for placement".
const errCodeClusterNoPeers jetstream.ErrorCode = 10005

// noPeersYet reports whether err is the cluster saying it has no peers to
// place a stream on.
func noPeersYet(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeClusterNoPeers
}

// whilePlacing runs create, and again while the cluster has no peers to
// place on yet, for up to placementWait; any other error ends it at once.
func whilePlacing(ctx context.Context, create func() error) error {
	policy := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(placementWait)), ctx)
	return backoff.Retry(func() error {
		err := create()
		if err != nil && !noPeersYet(err) {
			return backoff.Permanent(err)
		}
		return err
	}, policy)
}

// newInstallation reports whether none of the buckets that every process
// of any release reads (config, for the subject key) or that hold the
// values storage encodes (unread, subscriptions) exists yet.
func newInstallation(ctx context.Context, js jetstream.JetStream) (bool, error) {
	for _, bucket := range []string{BucketConfig, BucketUnread, BucketSubscriptions} {
		_, err := js.KeyValue(ctx, bucket)
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
		case err != nil:
			return false, fmt.Errorf("looking for bucket %s: %w", bucket, err)
		default:
			return false, nil
		}
	}
	return true, nil
}

// SubjectKey returns the deployment's subject key from the config bucket,
// creating a random one on first use. Every component derives user tokens
// from it, so they agree without sharing a setting.
func SubjectKey(ctx context.Context, js jetstream.JetStream) ([]byte, error) {
	kv, err := js.KeyValue(ctx, BucketConfig)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", BucketConfig, err)
	}
	entry, err := kv.Get(ctx, KeySubjectKey)
	if err == nil {
		return entry.Value(), nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("reading subject key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating subject key: %w", err)
	}
	if _, err := kv.Create(ctx, KeySubjectKey, key); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("storing subject key: %w", err)
		}
		entry, err := kv.Get(ctx, KeySubjectKey)
		if err != nil {
			return nil, fmt.Errorf("reading subject key after a concurrent create: %w", err)
		}
		return entry.Value(), nil
	}
	return key, nil
}

// Keyer returns the events.Keyer built from the deployment's subject key.
func Keyer(ctx context.Context, js jetstream.JetStream) (*events.Keyer, error) {
	key, err := SubjectKey(ctx, js)
	if err != nil {
		return nil, err
	}
	return events.NewKeyer(key)
}

// Ready reports nil when JetStream answers and every stream and bucket of
// the layout exists, and otherwise an error that names what is missing.
func Ready(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("JetStream not available: %w", err)
	}
	var missing []string
	for _, cfg := range DefaultLayout().streams() {
		if _, err := js.Stream(ctx, cfg.Name); err != nil {
			missing = append(missing, "stream "+cfg.Name)
		}
	}
	for _, cfg := range DefaultLayout().buckets() {
		if _, err := js.KeyValue(ctx, cfg.Bucket); err != nil {
			missing = append(missing, "bucket "+cfg.Bucket)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (run provisioning: pushctl provision or start with --provision)", strings.Join(missing, ", "))
	}
	return nil
}
