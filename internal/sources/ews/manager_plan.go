package ews

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// gapReason is why a subscription is made again: the reason label of
// pushproxy_ews_subscription_gaps_total.
type gapReason string

const (
	gapNone gapReason = ""
	// gapSilence: nothing came for twice the StatusFrequency and more.
	gapSilence gapReason = "silence"
	// gapError: a notification reported an error for the subscription.
	gapError gapReason = "error"
	// gapRestart: the Manager started; the subscription may have died
	// while it was away.
	gapRestart gapReason = "restart"
	// gapWatermark: the subscription could not be resumed from a
	// watermark (refused, or none known): events may have been missed.
	gapWatermark gapReason = "watermark"
)

// action is what an entry needs next.
type action int

const (
	actNone action = iota
	// actSubscribe makes the first subscription of a mailbox (reading
	// its Inbox folder id first).
	actSubscribe
	// actResubscribe makes the subscription of a mailbox again, from its
	// watermark.
	actResubscribe
	// actStore writes the entry's state: a newer watermark, or what a
	// failed write left out.
	actStore
	// actDrop deletes the record of a mailbox no longer listed.
	actDrop
)

// entry is the Manager's view of one mailbox's subscription, by store
// key. Its fields are guarded by Manager.mu.
type entry struct {
	key     string
	mailbox ManagedMailbox
	// managed: the mailbox is listed and gets a subscription.
	managed bool
	// state is the current subscription, nil when there is none.
	state *SubscriptionState
	// stored: the store holds state as it is (nothing when state is nil).
	stored bool
	// inbox is the Inbox folder id, once read.
	inbox string
	// gap is why the subscription is to be made again now; gapNone when
	// it is not (a silence is found by next).
	gap gapReason
	// failures counts the operations that failed in a row; the next is
	// not tried before retryAt.
	failures int
	retryAt  time.Time
	// busy: an operation is in flight.
	busy bool
}

// job is one operation, with what it needs from its entry.
type job struct {
	key     string
	act     action
	mailbox ManagedMailbox
	// old is the subscription the operation replaces or writes.
	old *SubscriptionState
	// inbox is the Inbox folder id when known.
	inbox string
	// gap is why a resubscription is made.
	gap gapReason
}

// silentAt is when the subscription of st counts as dead if nothing
// comes before.
func (m *Manager) silentAt(st *SubscriptionState) time.Time {
	return st.lastHeard().Add(2*m.cfg.StatusFrequency + m.cfg.SilenceMargin)
}

// next is the entry's next action and when it is due (the zero time:
// now).
func (m *Manager) next(e *entry, now time.Time) (action, time.Time) {
	if e.busy {
		return actNone, time.Time{}
	}
	switch {
	case !e.managed && (e.state != nil || !e.stored):
		return actDrop, e.retryAt
	case !e.managed:
		return actNone, time.Time{}
	case e.state == nil:
		return actSubscribe, e.retryAt
	case e.gap != gapNone:
		return actResubscribe, e.retryAt
	}
	silent := m.silentAt(e.state)
	if !now.Before(silent) {
		return actResubscribe, later(silent, e.retryAt)
	}
	if !e.stored {
		return actStore, e.retryAt
	}
	return actResubscribe, silent
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// backoff is the wait after the n-th failure in a row.
func (m *Manager) backoff(n int) time.Duration {
	d := m.cfg.ErrorBackoff
	for i := 1; i < n && d < m.cfg.MaxErrorBackoff; i++ {
		d *= 2
	}
	return min(d, m.cfg.MaxErrorBackoff)
}

// serves reports whether the Manager subscribes to mailboxes of tenant.
func (m *Manager) serves(tenant string) bool {
	return len(m.tenants) == 0 || slices.Contains(m.tenants, tenant)
}

// applyMailboxes makes boxes the managed ones and returns how many it
// skipped (of a tenant the Manager does not serve). Called with mu held.
func (m *Manager) applyMailboxes(boxes []ManagedMailbox) (skipped int) {
	for _, e := range m.entries {
		e.managed = false
	}
	for _, b := range boxes {
		if !m.serves(b.Tenant) {
			skipped++
			continue
		}
		key := SubscriptionKey(b.Tenant, b.User)
		e := m.entries[key]
		if e == nil {
			e = &entry{key: key, stored: true}
			m.entries[key] = e
		}
		e.mailbox, e.managed = b, true
	}
	for key, e := range m.entries {
		if !e.managed && e.state == nil && e.stored && !e.busy {
			delete(m.entries, key)
		}
	}
	return skipped
}

// dispatch starts the operations that are due, as many as Concurrency
// allows (the longest due first), and returns how many it started.
func (m *Manager) dispatch(ctx context.Context) int {
	type candidate struct {
		e   *entry
		act action
		due time.Time
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
			cands = append(cands, candidate{e: e, act: act, due: due})
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(a.due.Compare(b.due), cmp.Compare(a.e.key, b.e.key))
	})
	jobs := make([]job, 0, min(free, len(cands)))
	var silences int
	for _, c := range cands[:min(free, len(cands))] {
		e := c.e
		if c.act == actResubscribe && e.gap == gapNone {
			e.gap = gapSilence
			silences++
			m.cfg.Log.Warn().Str("tenant", e.mailbox.Tenant).Str("user", e.mailbox.User).Str("subscription", e.state.SubscriptionID).
				Time("last_heard", e.state.lastHeard()).Msg("an EWS subscription fell silent: subscribing again from its last watermark")
		}
		j := job{key: e.key, act: c.act, mailbox: e.mailbox, inbox: e.inbox, gap: e.gap}
		if e.state != nil {
			old := *e.state
			j.old = &old
		}
		if c.act == actSubscribe || c.act == actResubscribe {
			m.subscribing[e.key] = make(chan struct{})
		}
		e.busy = true
		m.inflight++
		jobs = append(jobs, j)
	}
	m.mu.Unlock()
	m.metrics.gaps.WithLabelValues(string(gapSilence)).Add(float64(silences))
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
		managed, active, subscribing int
		oldest                       time.Time
		nextDue                      time.Time
		haveDue                      bool
	)
	for _, e := range m.entries {
		act, due := m.next(e, now)
		if act != actNone && (!haveDue || due.Before(nextDue)) {
			nextDue, haveDue = due, true
		}
		if !e.managed {
			continue
		}
		managed++
		if e.state != nil {
			active++
			if heard := e.state.lastHeard(); oldest.IsZero() || heard.Before(oldest) {
				oldest = heard
			}
		}
		if _, inFlight := m.subscribing[e.key]; inFlight || act == actSubscribe || (act == actResubscribe && !due.After(now)) {
			subscribing++
		}
	}
	subscribed := m.subscribed
	report := now.Sub(m.lastProgress) >= ProgressInterval && (subscribing > 0 || subscribed > 0)
	if report {
		m.subscribed, m.lastProgress = 0, now
	}
	m.mu.Unlock()

	m.metrics.subscriptions.Set(float64(active))
	age := 0.0
	if !oldest.IsZero() && now.After(oldest) {
		age = now.Sub(oldest).Seconds()
	}
	m.metrics.age.Set(age)
	if report {
		m.cfg.Log.Info().Int("subscribed", subscribed).Int("to_subscribe", subscribing).Int("active", active).Int("managed", managed).
			Msg("subscribing EWS mailboxes")
	}
	wait := ProgressInterval
	if haveDue && nextDue.After(now) {
		wait = min(wait, nextDue.Sub(now))
	}
	// Work due now waits for a free slot: a finished operation wakes Run.
	return wait
}
