package ews

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNotReady is the error of Manager.Lookup while it cannot tell whether
// it knows a subscription: before Run has loaded the store, or while the
// Subscribe request that may have made it is not answered yet. The source
// answers such a notification 503, and Exchange delivers it again later.
var ErrNotReady = errors.New("the EWS subscription manager cannot tell yet")

var _ SubscriptionRegistry = (*Manager)(nil)

// Lookup finds the mailbox of a subscription: only the current
// subscription of a listed mailbox is known; any other id (an older
// subscription of the mailbox, one of a mailbox no longer listed, one
// made before a restart) is ErrUnknownSubscription, which the source
// answers Unsubscribe.
//
// Exchange may deliver the first notification of a subscription before
// the Manager has read the answer to its Subscribe request. So an id it
// does not know, while Subscribe requests are in flight, waits for them
// (at most LookupWait) before it is called unknown, and is ErrNotReady if
// they are still not answered.
func (m *Manager) Lookup(ctx context.Context, subscriptionID string) (Subscription, error) {
	m.core.Lock()
	if !m.core.Loaded() {
		m.core.Unlock()
		return Subscription{}, fmt.Errorf("looking up EWS subscription %s: %w: the subscriptions are not loaded", subscriptionID, ErrNotReady)
	}
	if sub, ok := m.current(subscriptionID); ok {
		m.core.Unlock()
		return sub, nil
	}
	pending := make([]chan struct{}, 0, len(m.subscribing))
	for _, done := range m.subscribing {
		pending = append(pending, done)
	}
	if len(pending) > 0 {
		m.lookupWaiters++
	}
	m.core.Unlock()
	if len(pending) == 0 {
		return Subscription{}, fmt.Errorf("looking up EWS subscription %s: %w", subscriptionID, ErrUnknownSubscription)
	}
	answered := m.awaitAll(ctx, pending)
	m.core.Lock()
	defer m.core.Unlock()
	m.lookupWaiters--
	if sub, ok := m.current(subscriptionID); ok {
		return sub, nil
	}
	if !answered {
		return Subscription{}, fmt.Errorf("looking up EWS subscription %s: %w: Subscribe requests in flight are not answered yet", subscriptionID, ErrNotReady)
	}
	return Subscription{}, fmt.Errorf("looking up EWS subscription %s: %w", subscriptionID, ErrUnknownSubscription)
}

// awaitAll waits until every channel of pending is closed, at most
// LookupWait, and reports whether they all were.
func (m *Manager) awaitAll(ctx context.Context, pending []chan struct{}) bool {
	timer := time.NewTimer(m.cfg.LookupWait)
	defer timer.Stop()
	for _, done := range pending {
		select {
		case <-done:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// current is the subscription id when it is the current one of a listed
// mailbox. Called with the core's lock held.
func (m *Manager) current(id string) (Subscription, bool) {
	e := m.currentEntry(id)
	if e == nil {
		return Subscription{}, false
	}
	return Subscription{Tenant: e.User.Tenant, User: e.User.User, InboxFolderID: e.State.InboxFolderID}, true
}

// currentEntry is the entry whose current subscription is id, nil when
// none is (or its mailbox is no longer listed). Called with the core's lock held.
func (m *Manager) currentEntry(id string) *entry {
	if e := m.core.Find(id); e != nil && e.Managed {
		return e
	}
	return nil
}

// Observe records a notification the source stored (set it as
// Config.Observe): the subscription delivered at at, and watermark (when
// not empty) is the newest event it has sent. The state is written to the
// store by Run. Notifications of subscriptions that are not current are
// ignored.
func (m *Manager) Observe(_ context.Context, subscriptionID, watermark string, at time.Time) {
	m.core.Lock()
	e := m.currentEntry(subscriptionID)
	if e == nil {
		m.core.Unlock()
		return
	}
	st := *e.State
	if watermark != "" && checkToken("", watermark, MaxWatermarkLen) == nil {
		st.Watermark = watermark
	}
	st.LastNotification = later(st.LastNotification, at)
	if st != *e.State {
		e.State, e.Stored = &st, false
	}
	m.core.Unlock()
	m.core.Signal()
}

// OnSubscriptionError handles a notification that reports an error for a
// subscription (set it as Config.OnSubscriptionError): the current
// subscription of a mailbox is made again at once, from its last
// watermark. Errors about other subscriptions are ignored.
func (m *Manager) OnSubscriptionError(_ context.Context, se SubscriptionError) {
	m.core.Lock()
	e := m.currentEntry(se.SubscriptionID)
	if e == nil || e.Extra.gap != gapNone {
		m.core.Unlock()
		return
	}
	e.Extra.gap = gapError
	tenant, user := e.User.Tenant, e.User.User
	m.core.Unlock()
	m.metrics.gaps.WithLabelValues(string(gapError)).Inc()
	m.cfg.Log.Warn().Str("tenant", tenant).Str("user", user).Str("subscription", se.SubscriptionID).Str("code", se.ResponseCode).
		Msg("Exchange reports an error for an EWS subscription: subscribing again from its last watermark")
	m.core.Signal()
}
