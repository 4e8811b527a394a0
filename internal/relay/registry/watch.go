package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Watch is a running watch of a registry bucket.
type Watch struct {
	bucket string
	ended  atomic.Bool
}

// Check reports an error once the watch has ended (its context ended or
// the NATS subscription closed): changes are no longer picked up. It fits
// a readiness check.
func (w *Watch) Check(context.Context) error {
	if w.ended.Load() {
		return fmt.Errorf("the watch of bucket %s has ended", w.bucket)
	}
	return nil
}

// startWatch loads kv with apply and keeps applying its changes until ctx
// ends; the returned Watch tells when that stops.
func startWatch(ctx context.Context, kv jetstream.KeyValue, apply func(key string, value []byte), log zerolog.Logger) (*Watch, error) {
	w := &Watch{bucket: kv.Bucket()}
	if err := watch(ctx, kv, log, apply, func() { w.ended.Store(true) }); err != nil {
		return nil, err
	}
	return w, nil
}

// PartnerCache is the partner registry in memory, kept up to date by a
// watch of the relay_partners bucket. It implements tokens.PartnerSource,
// so verifying a token never waits for NATS.
type PartnerCache struct {
	*Watch
	reg   *tokens.Registry
	count atomic.Int64

	mu     sync.RWMutex
	quotas map[string]Quota // organizations with a quota of their own
}

var _ tokens.PartnerSource = (*PartnerCache)(nil)

// WatchPartners loads every partner into a new PartnerCache and keeps it up
// to date until ctx ends. A registration that cannot be used (a certificate
// that does not parse, or one already registered for another organisation)
// is logged and left out.
func (s *Store) WatchPartners(ctx context.Context, log zerolog.Logger) (*PartnerCache, error) {
	c := &PartnerCache{reg: tokens.NewRegistry(), quotas: map[string]Quota{}}
	known := map[string]bool{}
	apply := func(key string, value []byte) {
		defer func() { c.count.Store(int64(len(known))) }()
		if value == nil {
			c.reg.Remove(key)
			c.setQuota(key, nil)
			delete(known, key)
			log.Info().Str("organization", key).Msg("partner removed")
			return
		}
		p, tp, err := decodePartner(value)
		if err == nil {
			err = c.reg.Put(tp)
		}
		if err != nil {
			c.reg.Remove(key)
			c.setQuota(key, nil)
			delete(known, key)
			log.Error().Err(err).Str("organization", key).Msg("partner registration is not usable; its tokens are rejected")
			return
		}
		known[key] = true
		quota, err := c.applyQuota(key, p.Quota)
		if err != nil {
			log.Error().Err(err).Str("organization", key).Str("quota", quota).Msg("partner quota is not usable; the previous one stays")
		}
		log.Info().Str("organization", key).Int("certificates", len(tp.Certificates)).Str("quota", quota).Msg("partner loaded")
	}
	w, err := startWatch(ctx, s.partners, apply, log)
	if err != nil {
		return nil, err
	}
	c.Watch = w
	return c, nil
}

// decodePartner decodes a stored partner, and into the verifier's form.
func decodePartner(value []byte) (Partner, tokens.Partner, error) {
	var p Partner
	if err := json.Unmarshal(value, &p); err != nil {
		return Partner{}, tokens.Partner{}, fmt.Errorf("decoding partner: %w", err)
	}
	tp, err := p.TokensPartner()
	return p, tp, err
}

// applyQuota makes q, when valid, organization's quota (nil: none of its
// own) and returns the quota in force, for the log. A quota that is not
// valid (a registration edited by hand) changes nothing: the error says
// why.
func (c *PartnerCache) applyQuota(organization string, q *Quota) (string, error) {
	if q != nil {
		n, err := q.normalize()
		if err != nil {
			return c.quotaText(organization), err
		}
		q = &n
	}
	c.setQuota(organization, q)
	return c.quotaText(organization), nil
}

// setQuota sets or, with nil, removes organization's own quota.
func (c *PartnerCache) setQuota(organization string, q *Quota) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q == nil {
		delete(c.quotas, organization)
		return
	}
	c.quotas[organization] = *q
}

// quotaText describes organization's quota in force, for the log.
func (c *PartnerCache) quotaText(organization string) string {
	if q, ok := c.Quota(organization); ok {
		return q.String()
	}
	return "default"
}

// Quota returns organization's own quota, valid and with its burst, and
// whether it has one; without one the relay's defaults apply. It reads
// memory only.
func (c *PartnerCache) Quota(organization string) (Quota, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	q, ok := c.quotas[organization]
	return q, ok
}

// PartnerByThumbprint implements tokens.PartnerSource from memory.
func (c *PartnerCache) PartnerByThumbprint(ctx context.Context, thumbprint string) (tokens.Partner, error) {
	return c.reg.PartnerByThumbprint(ctx, thumbprint)
}

// Len is the number of usable partners.
func (c *PartnerCache) Len() int { return int(c.count.Load()) }

// WatchApps calls apply for every registered app, then for every change,
// until ctx ends: with the app when it is added or changed, with nil when
// it is removed. It returns once the registered apps have been applied;
// later changes are applied one at a time by another goroutine. A
// registration that does not decode or validate is logged and applied as a
// removal.
func (s *Store) WatchApps(ctx context.Context, log zerolog.Logger, apply func(appID string, app *App)) (*Watch, error) {
	step := func(key string, value []byte) {
		if value == nil {
			apply(key, nil)
			return
		}
		var a App
		err := json.Unmarshal(value, &a)
		if err == nil {
			err = a.Validate()
		}
		if err == nil && a.AppID != key {
			err = fmt.Errorf("stored under key %q but names appId %q", key, a.AppID)
		}
		if err != nil {
			log.Error().Err(err).Str("app", key).Msg("app registration is not usable; its devices get rejected")
			apply(key, nil)
			return
		}
		apply(key, &a)
	}
	return startWatch(ctx, s.apps, step, log)
}
