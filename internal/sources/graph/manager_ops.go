package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// errGone is the error of a renewal of a subscription Graph does not
// have (404): it expired, or Graph removed it.
var errGone = errors.New("the subscription is gone from Graph")

// result is what an operation did.
type result struct {
	// changed: state replaces the entry's subscription (nil: it has none
	// any more).
	changed bool
	state   *SubscriptionState
	err     error
}

// work runs one job, writes its outcome to the store and hands it to
// the entry.
func (m *Manager) work(ctx context.Context, j job) {
	res := m.perform(ctx, j)
	toStore, write := res.state, res.changed
	if j.act == actStore {
		toStore, write = j.old, true
	}
	stored := true
	if write {
		if err := m.persist(ctx, j.key, toStore); err != nil {
			stored = false
			res.err = errors.Join(res.err, err)
		}
	}
	m.finish(j, res, write, stored)
	m.signal()
}

// perform does the Graph side of a job.
func (m *Manager) perform(ctx context.Context, j job) result {
	switch j.act {
	case actCreate:
		st, err := m.create(ctx, j.user)
		m.metrics.operation(opCreate, err)
		if err != nil {
			return result{err: err}
		}
		return result{changed: true, state: st}
	case actRenew:
		st, err := m.renew(ctx, j.old)
		if errors.Is(err, errGone) {
			m.cfg.Log.Info().Str("user", j.user.Address).Str("subscription", j.old.SubscriptionID).
				Msg("Graph no longer has the subscription: creating it anew")
			return m.recreate(ctx, j, false)
		}
		m.metrics.operation(opRenew, err)
		if err != nil {
			return result{err: err}
		}
		return result{changed: true, state: st}
	case actRecreate:
		return m.recreate(ctx, j, j.deleteOld)
	case actDelete:
		err := m.remove(ctx, j.user, j.old.SubscriptionID)
		m.metrics.operation(opDelete, err)
		if err != nil {
			return result{err: err}
		}
		return result{changed: true}
	}
	return result{}
}

// recreate creates the subscription of j's user anew, deleting the old
// one first when deleteOld.
func (m *Manager) recreate(ctx context.Context, j job, deleteOld bool) result {
	if deleteOld {
		if err := m.remove(ctx, j.user, j.old.SubscriptionID); err != nil {
			m.metrics.operation(opRecreate, err)
			return result{err: err}
		}
	}
	st, err := m.create(ctx, j.user)
	m.metrics.operation(opRecreate, err)
	if err != nil {
		// The old subscription is gone either way.
		return result{changed: true, err: err}
	}
	return result{changed: true, state: st}
}

// create creates the subscription of u. Graph validates both URLs before
// it answers.
func (m *Manager) create(ctx context.Context, u ManagedUser) (*SubscriptionState, error) {
	secret, version, ok := m.states.current(u.Tenant)
	if !ok {
		return nil, fmt.Errorf("creating the Graph subscription of %s: no clientState may report for tenant %s", u.Address, u.Tenant)
	}
	now := m.cfg.Now()
	expires := m.expiry(now)
	req := subscriptionRequest{
		ChangeType:               SubscriptionChangeTypes,
		NotificationURL:          m.cfg.NotificationURL,
		LifecycleNotificationURL: m.cfg.LifecycleURL,
		Resource:                 InboxResource(u.ID),
		ExpirationDateTime:       expires.Format(graphTime),
		ClientState:              secret,
	}
	ans, err := m.call(ctx, http.MethodPost, m.subscriptionsURL, req, "POST /subscriptions for "+u.Address)
	if err != nil {
		return nil, fmt.Errorf("creating the Graph subscription of %s: %w", u.Address, err)
	}
	if ans.status != http.StatusCreated && ans.status != http.StatusOK {
		return nil, fmt.Errorf("creating the Graph subscription of %s: %w", u.Address, apiError(ans.status, ans.body))
	}
	id, granted, err := decodeSubscription(ans.body)
	if err != nil {
		return nil, fmt.Errorf("creating the Graph subscription of %s: %w", u.Address, err)
	}
	if granted.IsZero() {
		granted = expires
	}
	m.mu.Lock()
	m.created++
	m.mu.Unlock()
	return &SubscriptionState{Tenant: u.Tenant, User: u.Address, UserID: u.ID, SubscriptionID: id, Resource: req.Resource,
		Expires: granted, ClientStateVersion: version, URLVersion: m.urlVersion, Created: now}, nil
}

// renew extends old's expiration; errGone when Graph does not have it.
func (m *Manager) renew(ctx context.Context, old *SubscriptionState) (*SubscriptionState, error) {
	now := m.cfg.Now()
	expires := m.expiry(now)
	ans, err := m.call(ctx, http.MethodPatch, m.subscriptionsURL+"/"+url.PathEscape(old.SubscriptionID),
		subscriptionRequest{ExpirationDateTime: expires.Format(graphTime)}, "PATCH /subscriptions for "+old.User)
	if err != nil {
		return nil, fmt.Errorf("renewing the Graph subscription of %s: %w", old.User, err)
	}
	switch ans.status {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("renewing the Graph subscription of %s: %w", old.User, errGone)
	default:
		return nil, fmt.Errorf("renewing the Graph subscription of %s: %w", old.User, apiError(ans.status, ans.body))
	}
	st := *old
	st.Expires, st.LastRenewal = expires, now
	// The renewal took place: an answer without a readable expiration
	// leaves the one asked for.
	if _, granted, err := decodeSubscription(ans.body); err == nil && !granted.IsZero() {
		st.Expires = granted
	}
	return &st, nil
}

// remove deletes a subscription of u; one Graph does not have is gone
// already.
func (m *Manager) remove(ctx context.Context, u ManagedUser, id string) error {
	ans, err := m.call(ctx, http.MethodDelete, m.subscriptionsURL+"/"+url.PathEscape(id), nil, "DELETE /subscriptions for "+u.Address)
	if err != nil {
		return fmt.Errorf("deleting the Graph subscription of %s: %w", u.Address, err)
	}
	if deletedStatus(ans.status) {
		return nil
	}
	return fmt.Errorf("deleting the Graph subscription of %s: %w", u.Address, apiError(ans.status, ans.body))
}

// expiry is the expiration to ask for at now: Lifetime later, less
// ClockSkewMargin at the maximum, to the second.
func (m *Manager) expiry(now time.Time) time.Time {
	lifetime := min(m.cfg.Lifetime, MaxMailSubscriptionLifetime-ClockSkewMargin)
	return now.Add(lifetime).UTC().Truncate(time.Second)
}

// persist writes st as the state of key (deletes it when nil). The
// write outlives ctx by up to RequestTimeout: what Graph did must not be
// forgotten because the Manager is stopping.
func (m *Manager) persist(ctx context.Context, key string, st *SubscriptionState) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.RequestTimeout)
	defer cancel()
	if st == nil {
		return m.cfg.Store.Delete(ctx, key)
	}
	return m.cfg.Store.Put(ctx, key, *st)
}

// finish hands a job's outcome to its entry.
func (m *Manager) finish(j job, res result, write, stored bool) {
	m.mu.Lock()
	m.inflight--
	e := m.entries[j.key]
	if e == nil {
		m.mu.Unlock()
		return
	}
	e.busy = false
	if res.changed {
		if j.old != nil && m.bySub[j.old.SubscriptionID] == j.key {
			delete(m.bySub, j.old.SubscriptionID)
		}
		e.state = res.state
		if res.state != nil {
			m.bySub[res.state.SubscriptionID] = j.key
		}
	}
	if write {
		e.stored = stored
	}
	var retryIn time.Duration
	if res.err != nil {
		e.failures++
		retryIn = m.backoff(e.failures)
		e.retryAt = m.cfg.Now().Add(retryIn)
	} else {
		e.failures, e.retryAt = 0, time.Time{}
	}
	if !e.managed && e.state == nil && e.stored {
		delete(m.entries, j.key)
	}
	failures := e.failures
	m.mu.Unlock()
	switch {
	case res.err == nil:
	case errors.Is(res.err, context.Canceled):
		m.cfg.Log.Debug().Err(res.err).Str("user", j.user.Address).Msg("a Graph subscription operation was cut short by stopping")
	default:
		m.cfg.Log.Warn().Err(res.err).Str("user", j.user.Address).Int("failures", failures).Dur("retry_in", retryIn).
			Msg("a Graph subscription operation failed")
	}
}
