package ews

import (
	"context"
	"slices"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/manage"
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

// The Manager's actions (manage.Store writes a newer watermark, or what
// a failed write left out).
const (
	// actSubscribe makes the first subscription of a mailbox (reading
	// its Inbox folder id first).
	actSubscribe manage.Action = iota + 1
	// actResubscribe makes the subscription of a mailbox again, from its
	// watermark.
	actResubscribe
	// actDrop deletes the record of a mailbox no longer listed.
	actDrop
)

// inboxNotes is what an entry keeps besides its subscription.
type inboxNotes struct {
	// inbox is the Inbox folder id, once read.
	inbox string
	// gap is why the subscription is to be made again now; gapNone when
	// it is not (a silence is found by Next).
	gap gapReason
}

// jobNotes is what an operation needs, and learns.
type jobNotes struct {
	// inbox is the Inbox folder id when known, or read.
	inbox string
	// gap is why a resubscription is made.
	gap gapReason
	// resumed: the subscription started at the watermark of the one it
	// replaces, so a newer watermark seen meanwhile is kept.
	resumed bool
}

// policy is the Manager's half of its manage.Core.
type policy struct{ *Manager }

// List reads the mailbox list.
func (p policy) List(ctx context.Context) ([]ManagedMailbox, error) {
	return p.cfg.Mailboxes.ListMailboxes(ctx)
}

// Serves reports whether the Manager subscribes to mailboxes of b's
// tenant.
func (p policy) Serves(b ManagedMailbox) bool {
	return len(p.tenants) == 0 || slices.Contains(p.tenants, b.Tenant)
}

// Who is b's tenant and address.
func (policy) Who(b ManagedMailbox) (tenant, address string) { return b.Tenant, b.User }

// ID is st's subscription id.
func (policy) ID(st *SubscriptionState) string { return st.SubscriptionID }

// Restore is the mailbox and Inbox of a stored subscription.
func (policy) Restore(st *SubscriptionState) (ManagedMailbox, inboxNotes) {
	return ManagedMailbox{Tenant: st.Tenant, User: st.User}, inboxNotes{inbox: st.InboxFolderID}
}

// Loaded makes every stored subscription of a listed mailbox due to be
// made again (a restart gap); Lookup answers with a retryable error until
// it is done.
func (p policy) Loaded(stored, managed, skipped int) {
	restarts := 0
	for e := range p.core.All() {
		if e.Managed && e.State != nil {
			e.Extra.gap = gapRestart
			restarts++
		}
	}
	p.metrics.gaps.WithLabelValues(string(gapRestart)).Add(float64(restarts))
	p.cfg.Log.Info().Int("stored", stored).Int("mailboxes", managed).Int("skipped_mailboxes", skipped).
		Int("status_frequency_minutes", p.freq).Float64("rate", p.cfg.Rate).
		Msg("managing EWS push subscriptions: subscribing every mailbox again, from its stored watermark")
}

// silentAt is when the subscription of st counts as dead if nothing
// comes before.
func (p policy) silentAt(st *SubscriptionState) time.Time {
	return st.lastHeard().Add(2*p.cfg.StatusFrequency + p.cfg.SilenceMargin)
}

// Next is the entry's next action and when it is due (the zero time:
// now).
func (p policy) Next(e *entry, now time.Time) (manage.Action, time.Time) {
	if e.Busy {
		return manage.None, time.Time{}
	}
	switch {
	case !e.Managed && (e.State != nil || !e.Stored):
		return actDrop, e.RetryAt
	case !e.Managed:
		return manage.None, time.Time{}
	case e.State == nil:
		return actSubscribe, e.RetryAt
	case e.Extra.gap != gapNone:
		return actResubscribe, e.RetryAt
	}
	silent := p.silentAt(e.State)
	if !now.Before(silent) {
		return actResubscribe, later(silent, e.RetryAt)
	}
	if !e.Stored {
		return manage.Store, e.RetryAt
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

// Urgent is false: the longest due goes first.
func (policy) Urgent(*entry) bool { return false }

// Start notes a silence (a resubscription due without a gap), and the
// Subscribe in flight that Lookup waits for.
func (p policy) Start(e *entry, act manage.Action, _ time.Time) jobNotes {
	if act == actResubscribe && e.Extra.gap == gapNone {
		e.Extra.gap = gapSilence
		p.metrics.gaps.WithLabelValues(string(gapSilence)).Inc()
		p.cfg.Log.Warn().Str("tenant", e.User.Tenant).Str("user", e.User.User).Str("subscription", e.State.SubscriptionID).
			Time("last_heard", e.State.lastHeard()).Msg("an EWS subscription fell silent: subscribing again from its last watermark")
	}
	if act == actSubscribe || act == actResubscribe {
		p.subscribing[e.Key] = make(chan struct{})
	}
	return jobNotes{inbox: e.Extra.inbox, gap: e.Extra.gap}
}

// Count counts the listed mailboxes, those with a subscription (noting
// when each was last heard of) and those being subscribed.
func (p policy) Count(t *manage.Tally, e *entry, act manage.Action, due, now time.Time) {
	if !e.Managed {
		return
	}
	t.Managed++
	if e.State != nil {
		t.Active++
		t.Note(e.State.lastHeard())
	}
	if _, inFlight := p.subscribing[e.Key]; inFlight || act == actSubscribe || (act == actResubscribe && !due.After(now)) {
		t.Pending++
	}
}

// Gauge sets the subscriptions and the age of the one heard from longest
// ago.
func (p policy) Gauge(t manage.Tally, now time.Time) {
	p.metrics.subscriptions.Set(float64(t.Active))
	age := 0.0
	if !t.Earliest.IsZero() && now.After(t.Earliest) {
		age = now.Sub(t.Earliest).Seconds()
	}
	p.metrics.age.Set(age)
}
