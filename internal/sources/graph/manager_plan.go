package graph

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"
	"time"
)

// action is what an entry needs next.
type action int

const (
	actNone action = iota
	// actCreate creates the missing subscription of a user.
	actCreate
	// actRenew extends the expiration (PATCH); one Graph no longer has is
	// created anew.
	actRenew
	// actRecreate creates anew a subscription that expired, that Graph
	// removed, or whose resource, clientState or URLs changed (deleting
	// the old one first when it may still exist).
	actRecreate
	// actDelete deletes the subscription of a user who left the directory.
	actDelete
	// actStore writes to the store what a failed write left out.
	actStore
)

// entry is the Manager's view of one user's subscription, by store key.
// Its fields are guarded by Manager.mu.
type entry struct {
	key  string
	user ManagedUser
	// managed: the user is in the directory and gets a subscription.
	managed bool
	// state is the current subscription, nil when there is none.
	state *SubscriptionState
	// stored: the store holds state (nothing when state is nil).
	stored bool
	// urgent is actRenew or actRecreate when a lifecycle notification
	// about subscription urgentSub asked for it.
	urgent    action
	urgentSub string
	// failures counts the operations that failed in a row; the next is
	// not tried before retryAt.
	failures int
	retryAt  time.Time
	// busy: an operation is in flight.
	busy bool
}

// job is one operation, with what it needs from its entry.
type job struct {
	key  string
	act  action
	user ManagedUser
	// old is the subscription the operation replaces or removes.
	old *SubscriptionState
	// deleteOld: a recreate deletes old first (it may still exist).
	deleteOld bool
}

// next is the entry's next action and when it is due (the zero time:
// now). An urgent action about a subscription the entry no longer has is
// dropped.
func (m *Manager) next(e *entry, now time.Time) (action, time.Time) {
	if e.busy {
		return actNone, time.Time{}
	}
	if e.urgent != actNone && (e.state == nil || e.state.SubscriptionID != e.urgentSub) {
		e.urgent = actNone
	}
	switch {
	case !e.stored:
		return actStore, e.retryAt
	case !e.managed && e.state == nil:
		return actNone, time.Time{}
	case !e.managed:
		return actDelete, e.retryAt
	case e.state == nil:
		return actCreate, e.retryAt
	case e.urgent == actRecreate:
		return actRecreate, time.Time{}
	case !now.Before(e.state.Expires) || m.stale(e):
		return actRecreate, e.retryAt
	case e.urgent == actRenew:
		return actRenew, time.Time{}
	}
	due := m.renewAt(e.key, e.state)
	if e.retryAt.After(due) {
		due = e.retryAt
	}
	return actRenew, due
}

// stale reports whether the entry's subscription is not the one its user
// would get now: another resource, clientState or URLs.
func (m *Manager) stale(e *entry) bool {
	_, version, _ := m.states.current(e.user.Tenant)
	return e.state.Resource != InboxResource(e.user.ID) || e.state.ClientStateVersion != version || e.state.URLVersion != m.urlVersion
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

// backoff is the wait after the n-th failure in a row.
func (m *Manager) backoff(n int) time.Duration {
	d := m.cfg.ErrorBackoff
	for i := 1; i < n && d < m.cfg.MaxErrorBackoff; i++ {
		d *= 2
	}
	return min(d, m.cfg.MaxErrorBackoff)
}

// eligible reports whether the Manager subscribes for u: its Entra
// tenant is the app's (when both are known), and a clientState may
// report for its tenant.
func (m *Manager) eligible(u ManagedUser) bool {
	if u.TenantID != "" && isGUID(m.cfg.TenantID) && !strings.EqualFold(u.TenantID, m.cfg.TenantID) {
		return false
	}
	_, _, ok := m.states.current(u.Tenant)
	return ok
}

// applyUsers makes users the managed ones and returns how many it
// skipped (not eligible). Called with mu held.
func (m *Manager) applyUsers(users []ManagedUser) (skipped int) {
	for _, e := range m.entries {
		e.managed = false
	}
	for _, u := range users {
		if !m.eligible(u) {
			skipped++
			continue
		}
		key := SubscriptionKey(u.Tenant, u.Address)
		e := m.entries[key]
		if e == nil {
			e = &entry{key: key, stored: true}
			m.entries[key] = e
		}
		e.user, e.managed = u, true
	}
	for key, e := range m.entries {
		if !e.managed && e.state == nil && e.stored && !e.busy {
			delete(m.entries, key)
		}
	}
	return skipped
}

// dispatch starts the operations that are due, as many as Concurrency
// allows (lifecycle requests first, then the longest due), and returns
// how many it started.
func (m *Manager) dispatch(ctx context.Context) int {
	type candidate struct {
		e      *entry
		act    action
		due    time.Time
		urgent bool
	}
	m.mu.Lock()
	free := m.cfg.Concurrency - m.inflight
	if free <= 0 {
		m.mu.Unlock()
		return 0
	}
	now := m.cfg.Now()
	var cands []candidate
	for _, e := range m.entries {
		act, due := m.next(e, now)
		if act != actNone && !due.After(now) {
			cands = append(cands, candidate{e: e, act: act, due: due, urgent: e.urgent != actNone})
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.urgent != b.urgent {
			if a.urgent {
				return -1
			}
			return 1
		}
		return cmp.Or(a.due.Compare(b.due), cmp.Compare(a.e.key, b.e.key))
	})
	jobs := make([]job, 0, min(free, len(cands)))
	for _, c := range cands[:min(free, len(cands))] {
		e := c.e
		j := job{key: e.key, act: c.act, user: e.user}
		if e.state != nil {
			old := *e.state
			j.old = &old
		}
		// A subscription Graph removed or that expired is gone; one
		// replaced for its settings may still exist.
		j.deleteOld = c.act == actRecreate && e.urgent != actRecreate && now.Before(e.state.Expires)
		if c.act == e.urgent {
			e.urgent = actNone
		}
		e.busy = true
		m.inflight++
		jobs = append(jobs, j)
	}
	m.mu.Unlock()
	for _, j := range jobs {
		m.workers.Go(func() { m.work(ctx, j) })
	}
	return len(jobs)
}

// count is the number of entries for which f is true. Called with mu
// held.
func (m *Manager) count(f func(*entry) bool) int {
	n := 0
	for _, e := range m.entries {
		if f(e) {
			n++
		}
	}
	return n
}

// tend sets the gauges, writes the progress line when it is time, and
// returns how long Run may wait for the next due operation.
func (m *Manager) tend() time.Duration {
	m.mu.Lock()
	now := m.cfg.Now()
	var (
		managed, active, creating int
		earliest, nextDue         time.Time
		haveDue                   bool
	)
	for _, e := range m.entries {
		if e.managed {
			managed++
		}
		if e.state != nil && now.Before(e.state.Expires) {
			if e.managed {
				active++
			}
			if earliest.IsZero() || e.state.Expires.Before(earliest) {
				earliest = e.state.Expires
			}
		}
		act, due := m.next(e, now)
		if act == actCreate || act == actRecreate {
			creating++
		}
		if act != actNone && (!haveDue || due.Before(nextDue)) {
			nextDue, haveDue = due, true
		}
	}
	created := m.created
	report := now.Sub(m.lastProgress) >= ProgressInterval && (creating > 0 || created > 0)
	if report {
		m.created, m.lastProgress = 0, now
	}
	m.mu.Unlock()

	m.metrics.subscriptions.WithLabelValues("managed").Set(float64(managed))
	m.metrics.subscriptions.WithLabelValues("active").Set(float64(active))
	if earliest.IsZero() {
		m.metrics.nextExpiry.Set(0)
	} else {
		m.metrics.nextExpiry.Set(float64(earliest.UnixNano()) / 1e9)
	}
	if report {
		m.cfg.Log.Info().Int("created", created).Int("to_create", creating).Int("active", active).Int("managed", managed).
			Msg("creating Graph subscriptions")
	}
	wait := ProgressInterval
	if haveDue && nextDue.After(now) {
		wait = min(wait, nextDue.Sub(now))
	}
	// Work due now waits for a free slot: a finished operation wakes Run.
	return wait
}
