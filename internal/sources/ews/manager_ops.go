package ews

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// result is what an operation did.
type result struct {
	// changed: state is the entry's new subscription.
	changed bool
	state   *SubscriptionState
	// inbox is the Inbox folder id read, if any.
	inbox string
	// resumed: the subscription started at the watermark of the one it
	// replaces, so a newer watermark seen meanwhile is kept.
	resumed bool
	// resync: events may have been missed; Resync is called.
	resync bool
	err    error
}

// work runs one job, writes its outcome to the store and hands it to the
// entry.
func (m *Manager) work(ctx context.Context, j job) {
	res := m.perform(ctx, j)
	var (
		written *SubscriptionState
		write   bool
	)
	switch {
	case j.act == actStore:
		written, write = j.old, true
	case j.act == actDrop:
		write = true
	case res.changed:
		copied := *res.state
		written, write = &copied, true
	}
	stored := true
	if write {
		if err := m.persist(ctx, j.key, written); err != nil {
			stored = false
			res.err = errors.Join(res.err, err)
		}
	}
	m.finish(j, res, written, stored)
	if res.resync && m.cfg.Resync != nil {
		m.cfg.Resync(context.WithoutCancel(ctx), j.mailbox.Tenant, j.mailbox.User)
	}
	m.signal()
}

// perform does the EWS side of a job.
func (m *Manager) perform(ctx context.Context, j job) result {
	switch j.act {
	case actSubscribe, actResubscribe:
		return m.subscribeJob(ctx, j)
	}
	return result{}
}

// subscribeJob reads the Inbox folder id when it is not known, then
// subscribes: from the old subscription's watermark for a
// resubscription, without one (and with a Resync) when there is none or
// Exchange refuses it.
func (m *Manager) subscribeJob(ctx context.Context, j job) result {
	op := opSubscribe
	if j.act == actResubscribe {
		op = opResubscribe
	}
	inbox := j.inbox
	if inbox == "" {
		id, err := m.readInbox(ctx, j.mailbox.User)
		if err != nil {
			m.metrics.operation(op, resultError)
			return result{err: err}
		}
		inbox = id
	}
	var watermark string
	if j.old != nil {
		watermark = j.old.Watermark
	}
	lost := j.act == actResubscribe && watermark == ""
	now := m.cfg.Now()
	ans, err := m.subscribe(ctx, j.mailbox.User, watermark)
	if watermark != "" && refusedWatermark(err) {
		m.metrics.operation(op, resultInvalidWatermark)
		m.cfg.Log.Warn().Err(err).Str("tenant", j.mailbox.Tenant).Str("user", j.mailbox.User).
			Msg("Exchange refused the watermark of an EWS subscription: subscribing afresh and asking for the count to be read again")
		lost, op, watermark = true, opSubscribe, ""
		ans, err = m.subscribe(ctx, j.mailbox.User, "")
	}
	m.metrics.operation(op, errorResult(err))
	if err != nil {
		return result{inbox: inbox, err: err}
	}
	if lost {
		m.metrics.gaps.WithLabelValues(string(gapWatermark)).Inc()
	}
	st := &SubscriptionState{Tenant: j.mailbox.Tenant, User: j.mailbox.User, SubscriptionID: ans.SubscriptionID,
		Watermark: ans.Watermark, InboxFolderID: inbox, Subscribed: now}
	if watermark != "" {
		// The events after it are still to come: keep it until a
		// notification brings a newer one.
		st.Watermark = watermark
	}
	if j.old != nil {
		st.LastNotification = j.old.LastNotification
	}
	m.mu.Lock()
	m.subscribed++
	m.mu.Unlock()
	return result{changed: true, state: st, inbox: inbox, resumed: watermark != "", resync: lost}
}

// subscribe makes a push subscription on the Inbox of user, from
// watermark when it is set. An answer of class Error is a
// *ResponseError.
func (m *Manager) subscribe(ctx context.Context, user, watermark string) (*SubscribeAnswer, error) {
	body := SubscribeRequest(PushSubscription{Mailbox: user, Folder: "inbox", EventTypes: SubscribedEventTypes(),
		Watermark: watermark, StatusFrequency: m.freq, URL: m.cfg.NotificationURL}, m.soap.impersonate)
	a, status, err := roundTrip(ctx, m.soap, SubscribeAction, user, body, DecodeSubscribe)
	if err != nil {
		return nil, fmt.Errorf("subscribing to the Inbox of %s: %w", user, err)
	}
	if a.ResponseClass == ClassError {
		return nil, fmt.Errorf("subscribing to the Inbox of %s: %w", user, &ResponseError{HTTPStatus: status, Code: a.ResponseCode, Message: a.MessageText})
	}
	return a, nil
}

// refusedWatermark reports whether err is Exchange refusing the
// watermark of a Subscribe request.
func refusedWatermark(err error) bool {
	var re *ResponseError
	return errors.As(err, &re) && (re.Code == CodeInvalidWatermark || re.Code == CodeExpiredSubscription)
}

// readInbox reads the Id of the Inbox folder of user with GetFolder.
func (m *Manager) readInbox(ctx context.Context, user string) (string, error) {
	a, status, err := roundTrip(ctx, m.soap, GetFolderAction, user, GetFolderRequest(user, "inbox", m.soap.impersonate), DecodeGetFolder)
	switch {
	case err != nil:
		return "", fmt.Errorf("reading the Inbox folder id of %s: %w", user, err)
	case a.ResponseClass == ClassError:
		return "", fmt.Errorf("reading the Inbox folder id of %s: %w", user, &ResponseError{HTTPStatus: status, Code: a.ResponseCode, Message: a.MessageText})
	case a.FolderID == "":
		return "", fmt.Errorf("reading the Inbox folder id of %s: the answer names no folder id", user)
	}
	return a.FolderID, nil
}

// persist writes st as the state of key (deletes it when nil). The write
// outlives ctx by up to RequestTimeout: a subscription made must not be
// forgotten because the Manager is stopping.
func (m *Manager) persist(ctx context.Context, key string, st *SubscriptionState) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.RequestTimeout)
	defer cancel()
	if st == nil {
		return m.cfg.Store.Delete(ctx, key)
	}
	return m.cfg.Store.Put(ctx, key, *st)
}

// finish hands a job's outcome to its entry: written is what the store
// got when stored is true.
func (m *Manager) finish(j job, res result, written *SubscriptionState, stored bool) {
	m.mu.Lock()
	m.inflight--
	if done, ok := m.subscribing[j.key]; ok && (j.act == actSubscribe || j.act == actResubscribe) {
		// Lookups waiting for this Subscribe look again once the new id
		// is known: done is closed on return, after the entry changed.
		defer close(done)
		delete(m.subscribing, j.key)
	}
	e := m.entries[j.key]
	if e == nil {
		m.mu.Unlock()
		return
	}
	e.busy = false
	if res.inbox != "" {
		e.inbox = res.inbox
	}
	switch {
	case j.act == actDrop:
		switch {
		case !stored:
		case e.managed:
			// Listed again meanwhile: write the state back.
			e.stored = false
		default:
			if e.state != nil && m.bySub[e.state.SubscriptionID] == j.key {
				delete(m.bySub, e.state.SubscriptionID)
			}
			delete(m.entries, j.key)
		}
	case j.act == actStore:
		e.stored = stored && e.state != nil && written != nil && *e.state == *written
	case res.changed:
		st := res.state
		if res.resumed && e.state != nil && j.old != nil && e.state.SubscriptionID == j.old.SubscriptionID {
			// The old subscription delivered meanwhile: keep the newer
			// watermark it brought.
			if e.state.Watermark != j.old.Watermark {
				st.Watermark = e.state.Watermark
			}
			st.LastNotification = later(st.LastNotification, e.state.LastNotification)
		}
		if e.state != nil && m.bySub[e.state.SubscriptionID] == j.key {
			delete(m.bySub, e.state.SubscriptionID)
		}
		e.state, e.gap = st, gapNone
		m.bySub[st.SubscriptionID] = j.key
		e.stored = stored && *st == *written
	}
	if res.err != nil {
		e.failures++
		e.retryAt = m.cfg.Now().Add(m.backoff(e.failures))
	} else {
		e.failures, e.retryAt = 0, time.Time{}
	}
	failures, retryAt := e.failures, e.retryAt
	m.mu.Unlock()
	switch {
	case res.err == nil:
	case errors.Is(res.err, context.Canceled):
		m.cfg.Log.Debug().Err(res.err).Str("user", j.mailbox.User).Msg("an EWS subscription operation was cut short by stopping")
	default:
		m.cfg.Log.Warn().Err(res.err).Str("tenant", j.mailbox.Tenant).Str("user", j.mailbox.User).Int("failures", failures).
			Time("retry_at", retryAt).Msg("an EWS subscription operation failed")
	}
}
