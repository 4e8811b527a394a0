package graph

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/manage"
)

// The Manager's actions (manage.Store writes to the store what a failed
// write left out).
const (
	// actCreate creates the missing subscription of a user.
	actCreate manage.Action = iota + 1
	// actRenew extends the expiration (PATCH); one Graph no longer has is
	// created anew.
	actRenew
	// actRecreate creates anew a subscription that expired, that Graph
	// removed, or whose resource, clientState or URLs changed (deleting
	// the old one first when it may still exist).
	actRecreate
	// actDelete deletes the subscription of a user who left the directory.
	actDelete
)

// urgency is what an entry keeps besides its subscription: actRenew or
// actRecreate when a lifecycle notification about subscription sub asked
// for it.
type urgency struct {
	act manage.Action
	sub string
}

// jobNotes is what an operation needs besides its entry's.
type jobNotes struct {
	// deleteOld: a recreate deletes old first (it may still exist).
	deleteOld bool
}

// policy is the Manager's half of its manage.Core.
type policy struct{ *Manager }

// List reads the directory.
func (p policy) List(ctx context.Context) ([]ManagedUser, error) { return p.cfg.Users.ListUsers(ctx) }

// Serves reports whether the Manager subscribes for u: its Entra tenant
// is the app's (when both are known), and a clientState may report for
// its tenant.
func (p policy) Serves(u ManagedUser) bool {
	if u.TenantID != "" && isGUID(p.cfg.TenantID) && !strings.EqualFold(u.TenantID, p.cfg.TenantID) {
		return false
	}
	_, _, ok := p.states.current(u.Tenant)
	return ok
}

// Who is u's tenant and address.
func (policy) Who(u ManagedUser) (tenant, address string) { return u.Tenant, u.Address }

// ID is st's subscription id.
func (policy) ID(st *SubscriptionState) string { return st.SubscriptionID }

// Restore is the user of a stored subscription.
func (policy) Restore(st *SubscriptionState) (ManagedUser, urgency) {
	return ManagedUser{Tenant: st.Tenant, Address: st.User, UserRef: UserRef{ID: st.UserID}}, urgency{}
}

// Loaded logs what Run starts with; lifecycle notifications were
// answered 503 until then.
func (p policy) Loaded(stored, managed, skipped int) {
	p.cfg.Log.Info().Int("stored", stored).Int("users", managed).Int("skipped_users", skipped).
		Dur("lifetime", p.cfg.Lifetime).Float64("rate", p.cfg.Rate).Msg("managing Graph subscriptions")
}

// Next is the entry's next action and when it is due (the zero time:
// now). An urgent action about a subscription the entry no longer has is
// dropped.
func (p policy) Next(e *entry, now time.Time) (manage.Action, time.Time) {
	if e.Busy {
		return manage.None, time.Time{}
	}
	if e.Extra.act != manage.None && (e.State == nil || e.State.SubscriptionID != e.Extra.sub) {
		e.Extra.act = manage.None
	}
	switch {
	case !e.Stored:
		return manage.Store, e.RetryAt
	case !e.Managed && e.State == nil:
		return manage.None, time.Time{}
	case !e.Managed:
		return actDelete, e.RetryAt
	case e.State == nil:
		return actCreate, e.RetryAt
	case e.Extra.act == actRecreate:
		return actRecreate, time.Time{}
	case !now.Before(e.State.Expires) || p.stale(e):
		return actRecreate, e.RetryAt
	case e.Extra.act == actRenew:
		return actRenew, time.Time{}
	}
	due := p.renewAt(e.Key, e.State)
	if e.RetryAt.After(due) {
		due = e.RetryAt
	}
	return actRenew, due
}

// stale reports whether the entry's subscription is not the one its user
// would get now: another resource, clientState or URLs.
func (p policy) stale(e *entry) bool {
	_, version, _ := p.states.current(e.User.Tenant)
	return e.State.Resource != InboxResource(e.User.ID) || e.State.ClientStateVersion != version || e.State.URLVersion != p.urlVersion
}

// renewAt is when a subscription is renewed: once less than RenewBefore
// is left until its expiry, later by a part of RenewJitter that depends
// on the user, and never before half the lifetime Graph granted it.
func (m *Manager) renewAt(key string, st *SubscriptionState) time.Time {
	granted := st.Expires.Sub(st.renewed())
	if granted <= 0 {
		granted = m.cfg.Lifetime
	}
	before := m.cfg.RenewBefore - time.Duration(jitterFraction(key)*float64(m.cfg.RenewJitter))
	return st.Expires.Add(-min(before, granted/2))
}

// jitterFraction is a number in [0, 1) that depends on key only, so that
// a user's renewals keep their place across restarts.
func jitterFraction(key string) float64 {
	h := sha256.Sum256([]byte("pushproxy graph renewal\x00" + key))
	return float64(binary.BigEndian.Uint64(h[:8])>>11) / (1 << 53)
}

// Urgent reports whether a lifecycle notification asked for the entry's
// action: it goes first.
func (policy) Urgent(e *entry) bool { return e.Extra.act != manage.None }

// Start decides whether a recreate deletes the old subscription first: a
// subscription Graph removed or that expired is gone; one replaced for
// its settings may still exist. An urgent action started is done.
func (policy) Start(e *entry, act manage.Action, now time.Time) jobNotes {
	j := jobNotes{deleteOld: act == actRecreate && e.Extra.act != actRecreate && now.Before(e.State.Expires)}
	if act == e.Extra.act {
		e.Extra.act = manage.None
	}
	return j
}

// Count counts the users of the directory, those with an unexpired
// subscription, and the creations to do; it notes the expiry of every
// unexpired subscription.
func (policy) Count(t *manage.Tally, e *entry, act manage.Action, _, now time.Time) {
	if e.Managed {
		t.Managed++
	}
	if e.State != nil && now.Before(e.State.Expires) {
		if e.Managed {
			t.Active++
		}
		t.Note(e.State.Expires)
	}
	if act == actCreate || act == actRecreate {
		t.Pending++
	}
}

// Gauge sets the managed and active subscriptions and the earliest
// expiry.
func (p policy) Gauge(t manage.Tally, _ time.Time) {
	p.metrics.subscriptions.WithLabelValues("managed").Set(float64(t.Managed))
	p.metrics.subscriptions.WithLabelValues("active").Set(float64(t.Active))
	if t.Earliest.IsZero() {
		p.metrics.nextExpiry.Set(0)
	} else {
		p.metrics.nextExpiry.Set(float64(t.Earliest.UnixNano()) / 1e9)
	}
}
