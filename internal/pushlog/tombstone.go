package pushlog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// Tombstone is what is left of a device subscription that a device-gone
// verdict removed: the whole record, why and when, kept in KV bucket
// tombstones under the subscription's own key for broker.TombstoneTTL
// (7 days by default) so that a verdict proved wrong can be undone
// (pushctl subscriptions restore, pushctl dlq redrive).
type Tombstone struct {
	// Subscription is the removed record, as it was stored.
	Subscription subscriptions.Subscription `json:"subscription"`
	// Reason is the relay's reason (e.g. "apns: 410 Unregistered").
	Reason string `json:"reason"`
	// VerdictAt is when the push service says the device went away, if it
	// said; RemovedAt is when the subscription was removed.
	VerdictAt time.Time `json:"verdict_at,omitzero"`
	RemovedAt time.Time `json:"removed_at"`
	// By names who removed it ("dispatcher", "redrive", "replay").
	By string `json:"by,omitempty"`
}

// ErrNoTombstone is returned by Tombstones.Get when there is none.
var ErrNoTombstone = errors.New("no tombstone")

// Tombstones reads and writes the tombstones bucket.
type Tombstones struct {
	kv jetstream.KeyValue
}

// OpenTombstones opens the tombstones bucket, which provisioning creates.
func OpenTombstones(ctx context.Context, js jetstream.JetStream) (*Tombstones, error) {
	kv, err := js.KeyValue(ctx, broker.BucketTombstones)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", broker.BucketTombstones, err)
	}
	return &Tombstones{kv: kv}, nil
}

// Put stores t under its subscription's key, replacing an older one.
func (s *Tombstones) Put(ctx context.Context, t Tombstone) error {
	if t.Subscription.Key == "" {
		return errors.New("storing a tombstone: the subscription has no key")
	}
	data, err := Encode(t)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, t.Subscription.Key, data); err != nil {
		return fmt.Errorf("storing the tombstone of %s: %w", subscriptions.DeviceRef(t.Subscription.AppID, t.Subscription.DeviceID), err)
	}
	return nil
}

// Get returns the tombstone of a subscription key, or ErrNoTombstone.
func (s *Tombstones) Get(ctx context.Context, key string) (Tombstone, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Tombstone{}, ErrNoTombstone
	}
	if err != nil {
		return Tombstone{}, fmt.Errorf("reading tombstone %s: %w", key, err)
	}
	return Decode[Tombstone](e.Value())
}

// Delete removes the tombstone of a subscription key; a missing one is
// not an error.
func (s *Tombstones) Delete(ctx context.Context, key string) error {
	if err := s.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("deleting tombstone %s: %w", key, err)
	}
	return nil
}

// TombstoneFilter selects tombstones; empty fields match everything.
type TombstoneFilter struct {
	// UserKey restricts to one user's subscriptions (events.Keyer.UserKey).
	UserKey string
	// Tenant and AppID compare with the removed subscription's fields.
	Tenant string
	AppID  string
}

// List returns the tombstones that match f, oldest removal first.
func (s *Tombstones) List(ctx context.Context, f TombstoneFilter) ([]Tombstone, error) {
	filter := jetstream.AllKeys
	if f.UserKey != "" {
		filter = f.UserKey + ".*"
	}
	var out []Tombstone
	err := broker.ReadAll(ctx, s.kv, filter, func(e jetstream.KeyValueEntry) error {
		t, err := Decode[Tombstone](e.Value())
		if err != nil {
			return fmt.Errorf("tombstone %s: %w", e.Key(), err)
		}
		if f.Tenant != "" && !strings.EqualFold(t.Subscription.Tenant, f.Tenant) {
			return nil
		}
		if f.AppID != "" && t.Subscription.AppID != f.AppID {
			return nil
		}
		t.Subscription.Key = e.Key()
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing tombstones: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].RemovedAt.Before(out[j].RemovedAt) })
	return out, nil
}
