package ews

import (
	"context"
	"errors"
	"fmt"

	"github.com/pushproxy/pushproxy/internal/sources/manage"
)

// Perform does the EWS side of a job: a subscription, or the drop of a
// mailbox's record.
func (p policy) Perform(ctx context.Context, j *job) manage.Result[SubscriptionState] {
	if j.Act == actDrop {
		return manage.Result[SubscriptionState]{Changed: true}
	}
	return p.subscribeJob(ctx, j)
}

// subscribeJob reads the Inbox folder id when it is not known, then
// subscribes: from the old subscription's watermark for a
// resubscription, without one (and with a Resync) when there is none or
// Exchange refuses it.
func (p policy) subscribeJob(ctx context.Context, j *job) manage.Result[SubscriptionState] {
	op := opSubscribe
	if j.Act == actResubscribe {
		op = opResubscribe
	}
	if j.Extra.inbox == "" {
		id, err := p.readInbox(ctx, j.User.User)
		if err != nil {
			p.metrics.operation(op, resultError)
			return manage.Result[SubscriptionState]{Err: err}
		}
		j.Extra.inbox = id
	}
	var watermark string
	if j.Old != nil {
		watermark = j.Old.Watermark
	}
	lost := j.Act == actResubscribe && watermark == ""
	now := p.cfg.Now()
	ans, err := p.subscribe(ctx, j.User.User, watermark)
	if watermark != "" && refusedWatermark(err) {
		p.metrics.operation(op, resultInvalidWatermark)
		p.cfg.Log.Warn().Err(err).Str("tenant", j.User.Tenant).Str("user", j.User.User).
			Msg("Exchange refused the watermark of an EWS subscription: subscribing afresh and asking for the count to be read again")
		lost, op, watermark = true, opSubscribe, ""
		ans, err = p.subscribe(ctx, j.User.User, "")
	}
	p.metrics.operation(op, errorResult(err))
	if err != nil {
		return manage.Result[SubscriptionState]{Err: err}
	}
	if lost {
		p.metrics.gaps.WithLabelValues(string(gapWatermark)).Inc()
	}
	st := &SubscriptionState{Tenant: j.User.Tenant, User: j.User.User, SubscriptionID: ans.SubscriptionID,
		Watermark: ans.Watermark, InboxFolderID: j.Extra.inbox, Subscribed: now}
	if watermark != "" {
		// The events after it are still to come: keep it until a
		// notification brings a newer one.
		st.Watermark = watermark
	}
	if j.Old != nil {
		st.LastNotification = j.Old.LastNotification
	}
	p.core.Made()
	j.Extra.resumed = watermark != ""
	if lost && p.cfg.Resync != nil {
		p.cfg.Resync(context.WithoutCancel(ctx), j.User.Tenant, j.User.User)
	}
	return manage.Result[SubscriptionState]{Changed: true, State: st}
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

// Settle hands a job's outcome to its entry, and lets the Lookups that
// wait for its Subscribe look again (once the new id is known).
func (p policy) Settle(e *entry, j *job, res manage.Result[SubscriptionState], written *SubscriptionState, stored bool) {
	if done, ok := p.subscribing[j.Key]; ok && (j.Act == actSubscribe || j.Act == actResubscribe) {
		defer close(done)
		delete(p.subscribing, j.Key)
	}
	if e == nil {
		return
	}
	if j.Extra.inbox != "" {
		e.Extra.inbox = j.Extra.inbox
	}
	switch {
	case j.Act == actDrop:
		switch {
		case !stored:
		case e.Managed:
			// Listed again meanwhile: write the state back.
			e.Stored = false
		default:
			// Forgotten by the Core.
			p.core.Replace(e, nil)
			e.Stored = true
		}
	case res.Changed:
		st := res.State
		if j.Extra.resumed && e.State != nil && j.Old != nil && e.State.SubscriptionID == j.Old.SubscriptionID {
			// The old subscription delivered meanwhile: keep the newer
			// watermark it brought.
			if e.State.Watermark != j.Old.Watermark {
				st.Watermark = e.State.Watermark
			}
			st.LastNotification = later(st.LastNotification, e.State.LastNotification)
		}
		p.core.Replace(e, st)
		e.Extra.gap = gapNone
		e.Stored = stored && *st == *written
	}
}

// Failed logs an operation that failed.
func (p policy) Failed(j *job, f manage.Failure) {
	p.cfg.Log.Warn().Err(f.Err).Str("tenant", j.User.Tenant).Str("user", j.User.User).Int("failures", f.Failures).
		Time("retry_at", f.RetryAt).Msg("an EWS subscription operation failed")
}
