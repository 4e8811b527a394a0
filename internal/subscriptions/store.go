package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/storage"
)

// ErrNotFound is returned when deleting a subscription that does not exist.
var ErrNotFound = errors.New("subscription not found")

// Store keeps subscriptions in the KV bucket "subscriptions". It reads
// them in either encoding (Decode) and writes them in the one the storage
// settings say (storage.Switch). It is safe for concurrent use.
type Store struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	keyer *events.Keyer
	ttl   time.Duration
	now   func() time.Time
	enc   *storage.Switch
	// limits bound the devices of a user and of a tenant.
	limits  Limits
	tenants *tenantCounts
}

// Open opens the bucket, which provisioning creates with the subscription
// TTL. keyer derives the user keys (broker.Keyer gives the deployment's).
func Open(ctx context.Context, js jetstream.JetStream, keyer *events.Keyer) (*Store, error) {
	kv, err := js.KeyValue(ctx, broker.BucketSubscriptions)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", broker.BucketSubscriptions, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading bucket %s status: %w", broker.BucketSubscriptions, err)
	}
	return &Store{js: js, kv: kv, keyer: keyer, ttl: status.TTL(), now: time.Now, enc: storage.NewSwitch(js, broker.BucketConfig),
		limits: DefaultLimits, tenants: &tenantCounts{m: map[string]tenantCount{}}}, nil
}

// WithEncoding returns a copy of the store that writes the encoding enc
// says (storage.Fixed: always the same one) instead of following the
// storage settings.
func (s *Store) WithEncoding(enc *storage.Switch) *Store {
	c := *s
	c.enc = enc
	return &c
}

// WithClock returns a copy of the store that takes time from now.
func (s *Store) WithClock(now func() time.Time) *Store {
	c := *s
	c.now = now
	return &c
}

// TTL is how long a subscription lives after its last refresh (0: forever).
func (s *Store) TTL() time.Duration { return s.ttl }

// UserKey is the prefix of the keys of a user's subscriptions.
func (s *Store) UserKey(tenant, user string) string { return s.keyer.UserKey(tenant, user) }

// Key is the bucket key of a subscription.
func (s *Store) Key(tenant, user, appID, deviceID string) string {
	return Key(s.keyer.UserKey(tenant, user), appID, deviceID)
}

// Key is the bucket key of the subscription of device appID/deviceID of
// the user with key userKey (events.Keyer.UserKey): the one place keys are
// built.
func Key(userKey, appID, deviceID string) string {
	return userKey + "." + DeviceHash(appID, deviceID)
}

// Put normalizes and validates sub, then subscribes it or, if it exists,
// refreshes it; either way it lives for another TTL. It returns the stored
// subscription and whether it is new. A *ValidationError names the field
// that is wrong.
func (s *Store) Put(ctx context.Context, sub Subscription) (Subscription, bool, error) {
	sub.Normalize()
	if err := sub.Validate(); err != nil {
		return Subscription{}, false, err
	}
	sub.LastSubscriptionUpdate = s.now().UTC().Truncate(time.Millisecond)
	key := s.Key(sub.Tenant, sub.User, sub.AppID, sub.DeviceID)
	if err := s.checkRoom(ctx, sub, key); err != nil {
		return Subscription{}, false, err
	}
	data, err := Encode(sub, s.enc.Encoding(ctx))
	if err != nil {
		return Subscription{}, false, fmt.Errorf("encoding subscription: %w", err)
	}
	created := true
	if _, err := s.kv.Create(ctx, key, data); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return Subscription{}, false, fmt.Errorf("storing subscription: %w", err)
		}
		created = false
		if _, err := s.kv.Put(ctx, key, data); err != nil {
			return Subscription{}, false, fmt.Errorf("refreshing subscription: %w", err)
		}
	}
	sub.Key = key
	sub.ExpiresAt = s.expiry(sub.LastSubscriptionUpdate)
	if created {
		s.tenants.add(key, 1)
	}
	return sub, created, nil
}

// Delete removes the subscription of the device appID/deviceID of a user.
// It returns an error matching ErrNotFound when there is none, and a
// *ValidationError when the identifying fields are invalid.
func (s *Store) Delete(ctx context.Context, tenant, user, appID, deviceID string) error {
	sub := Subscription{Tenant: tenant, User: user, AppID: appID, DeviceID: deviceID}
	sub.Normalize()
	if err := sub.validateDevice(); err != nil {
		return err
	}
	return s.DeleteKey(ctx, s.Key(sub.Tenant, sub.User, sub.AppID, sub.DeviceID))
}

// Get returns the subscription stored under key, or an error matching
// ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (Subscription, error) {
	entry, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Subscription{}, ErrNotFound
	}
	if err != nil {
		return Subscription{}, fmt.Errorf("reading subscription: %w", err)
	}
	return s.decode(entry)
}

// DeleteKey removes the subscription stored under key.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	if _, err := s.kv.Get(ctx, key); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return ErrNotFound
		}
		return fmt.Errorf("reading subscription: %w", err)
	}
	if err := s.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("deleting subscription: %w", err)
	}
	s.tenants.add(key, -1)
	return nil
}

// List returns a user's subscriptions, sorted by app and device. It reads
// them in one batched direct get, without a consumer (a new device's
// registration lists its user's, see checkRoom), or for a user with more
// than one answer holds, as a stream.
func (s *Store) List(ctx context.Context, tenant, user string) ([]Subscription, error) {
	tenant = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(tenant)), ".")
	user = strings.TrimSpace(user)
	if err := events.ValidateTenant(tenant); err != nil {
		return nil, err
	}
	if err := events.ValidateAddress("user", user); err != nil {
		return nil, err
	}
	entries, err := s.readLast(ctx, []string{s.keyer.UserKey(tenant, user)})
	if err != nil {
		return nil, fmt.Errorf("listing subscriptions: %w", err)
	}
	var out []Subscription
	for _, e := range entries {
		if e.err != nil {
			return nil, fmt.Errorf("listing subscriptions: %w", e.err)
		}
		if !e.gone {
			out = append(out, e.sub)
		}
	}
	sortSubscriptions(out)
	return out, nil
}

// ListAll returns every subscription, sorted by tenant, user, app and device.
func (s *Store) ListAll(ctx context.Context) ([]Subscription, error) {
	return s.list(ctx, jetstream.AllKeys)
}

func (s *Store) list(ctx context.Context, filter string) ([]Subscription, error) {
	var out []Subscription
	err := broker.ReadAll(ctx, s.kv, filter, func(e jetstream.KeyValueEntry) error {
		sub, err := s.decode(e)
		if err != nil {
			return err
		}
		out = append(out, sub)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing subscriptions: %w", err)
	}
	sortSubscriptions(out)
	return out, nil
}

func (s *Store) decode(entry jetstream.KeyValueEntry) (Subscription, error) {
	return s.decodeValue(entry.Key(), entry.Value(), entry.Created())
}

// decodeValue reads the subscription stored under key, last written at
// refreshed.
func (s *Store) decodeValue(key string, value []byte, refreshed time.Time) (Subscription, error) {
	sub, err := Decode(value)
	if err != nil {
		return Subscription{}, fmt.Errorf("decoding subscription %s: %w", key, err)
	}
	sub.Key = key
	sub.ExpiresAt = s.expiry(refreshed)
	return sub, nil
}

func (s *Store) expiry(refreshed time.Time) time.Time {
	if s.ttl <= 0 {
		return time.Time{}
	}
	return refreshed.Add(s.ttl).UTC()
}

func sortSubscriptions(subs []Subscription) {
	sort.Slice(subs, func(i, j int) bool {
		a, b := subs[i], subs[j]
		if a.Tenant != b.Tenant {
			return a.Tenant < b.Tenant
		}
		if a.User != b.User {
			return a.User < b.User
		}
		if a.AppID != b.AppID {
			return a.AppID < b.AppID
		}
		return a.DeviceID < b.DeviceID
	})
}

// Users calls fn once for each user with at least one subscription, of
// tenant or, when tenant is empty, of every tenant. It reads the bucket as
// a stream and remembers only the user keys seen.
func (s *Store) Users(ctx context.Context, tenant string, fn func(tenant, user string) error) error {
	filter := jetstream.AllKeys
	if tenant != "" {
		filter = events.TenantToken(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(tenant)), ".")) + ".>"
	}
	seen := make(map[string]struct{})
	err := broker.ReadAll(ctx, s.kv, filter, func(e jetstream.KeyValueEntry) error {
		userKey, _, ok := cutLastDot(e.Key())
		if !ok {
			return nil
		}
		if _, dup := seen[userKey]; dup {
			return nil
		}
		sub, err := s.decode(e)
		if err != nil {
			return err
		}
		seen[userKey] = struct{}{}
		return fn(sub.Tenant, sub.User)
	})
	if err != nil {
		return fmt.Errorf("listing users with subscriptions: %w", err)
	}
	return nil
}

// cutLastDot splits a subscription key into its user key and device part.
func cutLastDot(key string) (before, after string, ok bool) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}
