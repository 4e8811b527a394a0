package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/manage"
)

// errGone is the error of a renewal of a subscription Graph does not
// have (404): it expired, or Graph removed it.
var errGone = errors.New("the subscription is gone from Graph")

// Perform does the Graph side of a job.
func (p policy) Perform(ctx context.Context, j *job) manage.Result[SubscriptionState] {
	switch j.Act {
	case actCreate:
		st, err := p.create(ctx, j.User)
		p.metrics.operation(opCreate, err)
		if err != nil {
			return manage.Result[SubscriptionState]{Err: err}
		}
		return manage.Result[SubscriptionState]{Changed: true, State: st}
	case actRenew:
		st, err := p.renew(ctx, j.Old)
		if errors.Is(err, errGone) {
			p.cfg.Log.Info().Str("user", j.User.Address).Str("subscription", j.Old.SubscriptionID).
				Msg("Graph no longer has the subscription: creating it anew")
			return p.recreate(ctx, j, false)
		}
		p.metrics.operation(opRenew, err)
		if err != nil {
			return manage.Result[SubscriptionState]{Err: err}
		}
		return manage.Result[SubscriptionState]{Changed: true, State: st}
	case actRecreate:
		return p.recreate(ctx, j, j.Extra.deleteOld)
	case actDelete:
		err := p.remove(ctx, j.User, j.Old.SubscriptionID)
		p.metrics.operation(opDelete, err)
		if err != nil {
			return manage.Result[SubscriptionState]{Err: err}
		}
		return manage.Result[SubscriptionState]{Changed: true}
	}
	return manage.Result[SubscriptionState]{}
}

// recreate creates the subscription of j's user anew, deleting the old
// one first when deleteOld.
func (m *Manager) recreate(ctx context.Context, j *job, deleteOld bool) manage.Result[SubscriptionState] {
	if deleteOld {
		if err := m.remove(ctx, j.User, j.Old.SubscriptionID); err != nil {
			m.metrics.operation(opRecreate, err)
			return manage.Result[SubscriptionState]{Err: err}
		}
	}
	st, err := m.create(ctx, j.User)
	m.metrics.operation(opRecreate, err)
	if err != nil {
		// The old subscription is gone either way.
		return manage.Result[SubscriptionState]{Changed: true, Err: err}
	}
	return manage.Result[SubscriptionState]{Changed: true, State: st}
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
	m.core.Made()
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

// Settle hands a job's outcome to its entry.
func (p policy) Settle(e *entry, _ *job, res manage.Result[SubscriptionState], _ *SubscriptionState, stored bool) {
	if e == nil {
		return
	}
	if res.Changed {
		p.core.Replace(e, res.State)
		e.Stored = stored
	}
}

// Failed logs an operation that failed.
func (p policy) Failed(j *job, f manage.Failure) {
	p.cfg.Log.Warn().Err(f.Err).Str("user", j.User.Address).Int("failures", f.Failures).Dur("retry_in", f.RetryIn).
		Msg("a Graph subscription operation failed")
}
