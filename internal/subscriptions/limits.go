package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/events"
)

// Limits bound the devices subscribed at once (0: no limit).
type Limits struct {
	PerUser   int
	PerTenant int
}

// DefaultLimits are the limits of a store unless WithLimits says otherwise.
var DefaultLimits = Limits{PerUser: DefaultMaxPerUser, PerTenant: DefaultMaxPerTenant}

// DefaultMaxPerUser is how many devices one user may have subscribed at
// once by default.
const DefaultMaxPerUser = 20

// DefaultMaxPerTenant is how many devices one tenant may have subscribed
// at once by default.
const DefaultMaxPerTenant = 1_000_000

// tenantCountTTL is how long a tenant's counted devices are trusted
// (together with the creations and deletions made through this store
// meanwhile) before they are counted again.
const tenantCountTTL = time.Minute

// ErrTooMany is returned by Put for a new device of a user or tenant that
// has the most subscriptions allowed.
var ErrTooMany = errors.New("too many subscriptions")

// WithLimits returns a copy of the store with other limits.
func (s *Store) WithLimits(l Limits) *Store {
	c := *s
	c.limits = l
	return &c
}

// WithMaxPerUser returns a copy of the store that allows n devices per
// user (0: no limit).
func (s *Store) WithMaxPerUser(n int) *Store {
	l := s.limits
	l.PerUser = n
	return s.WithLimits(l)
}

// checkRoom refuses a new device of a user or tenant at its limit. A
// refresh of a known one (the frequent case) passes on one read of its
// key; only a new device lists the user's, and counts the tenant's at most
// once per tenantCountTTL.
func (s *Store) checkRoom(ctx context.Context, sub Subscription, key string) error {
	if s.limits.PerUser <= 0 && s.limits.PerTenant <= 0 {
		return nil
	}
	if _, err := s.kv.Get(ctx, key); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("reading subscription %s: %w", key, err)
	}
	if s.limits.PerUser > 0 {
		have, err := s.List(ctx, sub.Tenant, sub.User)
		if err != nil {
			return err
		}
		if len(have) >= s.limits.PerUser {
			return fmt.Errorf("%w: %s has %d devices subscribed, the most allowed; unsubscribe one first", ErrTooMany, sub.User, len(have))
		}
	}
	if s.limits.PerTenant > 0 {
		n, err := s.tenants.count(ctx, s.kv, events.TenantToken(sub.Tenant), s.now())
		if err != nil {
			return err
		}
		if n >= s.limits.PerTenant {
			return fmt.Errorf("%w: tenant %s has %d devices subscribed, the most allowed", ErrTooMany, sub.Tenant, n)
		}
	}
	return nil
}

// tenantCounts caches how many devices each tenant has, by the tenant's
// key token (the first token of its subscriptions' keys), shared by the
// copies of a store.
type tenantCounts struct {
	mu sync.Mutex
	m  map[string]tenantCount
}

type tenantCount struct {
	n       int
	at      time.Time
	counted bool // n was counted in the bucket at least once
	// counting is closed when the count running in the bucket ends; nil
	// when none runs.
	counting chan struct{}
}

// count returns the devices of the tenant with key token tenant: counted
// in the bucket when the last count is older than tenantCountTTL, else the
// last count adjusted by what this store created and deleted since. One
// caller at a time counts a tenant: the others take the last count
// meanwhile, or, before the first, wait for it. Counting lists every key
// of the tenant, so a burst of new devices of a large tenant would
// otherwise list its million keys once per device.
func (c *tenantCounts) count(ctx context.Context, kv jetstream.KeyValue, tenant string, now time.Time) (int, error) {
	c.mu.Lock()
	got := c.m[tenant]
	if got.counted && (now.Sub(got.at) < tenantCountTTL || got.counting != nil) {
		c.mu.Unlock()
		return got.n, nil
	}
	if wait := got.counting; wait != nil {
		c.mu.Unlock()
		select {
		case <-wait:
			return c.count(ctx, kv, tenant, now)
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for the count of a tenant's subscriptions: %w", ctx.Err())
		}
	}
	done := make(chan struct{})
	defer close(done)
	got.counting = done
	c.m[tenant] = got
	c.mu.Unlock()

	n, err := countKeys(ctx, kv, tenant+".>")
	c.mu.Lock()
	defer c.mu.Unlock()
	got = c.m[tenant]
	got.counting = nil
	if err == nil {
		got.n, got.at, got.counted = n, now, true
	}
	c.m[tenant] = got
	return n, err
}

// countKeys counts the keys of kv that match filter.
func countKeys(ctx context.Context, kv jetstream.KeyValue, filter string) (int, error) {
	keys, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return 0, fmt.Errorf("counting the subscriptions of a tenant: %w", err)
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	_ = keys.Stop() // the listing has ended: nothing left to stop
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("counting the subscriptions of a tenant: %w", err)
	}
	return n, nil
}

// add adjusts the count of the tenant of a subscription key by delta (a
// device created or deleted).
func (c *tenantCounts) add(key string, delta int) {
	tenant, _, _ := strings.Cut(key, ".")
	c.mu.Lock()
	defer c.mu.Unlock()
	if got, ok := c.m[tenant]; ok {
		got.n = max(0, got.n+delta)
		c.m[tenant] = got
	}
}
