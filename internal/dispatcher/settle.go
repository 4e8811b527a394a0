package dispatcher

// Pushing and settling: due pushes become notifications, the relay's
// answers become acks, requeues, dead letters and pruned subscriptions, and
// the user's state is written before its events are acknowledged.

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// dispatch acts on pushes that are due: skips settle at once, the others
// go to the sender.
func (w *worker) dispatch(ctx context.Context, pushes []coalesce.Push, now time.Time) {
	if len(pushes) == 0 || w.d.nc.IsClosed() {
		return
	}
	proxy := w.d.proxy()
	var tasks []*settleTask
	for _, p := range pushes {
		rec := w.users[p.Key]
		if rec == nil {
			w.co.Forget(p.Key)
			continue
		}
		msgs := rec.pending
		rec.pending = nil
		if p.Skip {
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, skip: "unchanged"})
			continue
		}
		if !proxy.enabled {
			w.co.Failed(now, p.Key, time.Time{})
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, skip: "proxy_disabled"})
			continue
		}
		subs := w.d.devices(rec.key)
		if len(subs) == 0 {
			w.co.Failed(now, p.Key, time.Time{})
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, skip: "no_subscriptions"})
			continue
		}
		subs, until := allowed(w.d.sender.path.get(w.d).Breakers(), rec.tenant, subs)
		if len(subs) == 0 {
			// Every app of the user is paused after app faults: hold the
			// push, without using the retry budget, until a trial may go.
			var t *settleTask
			if t, msgs = keepLatest(rec, msgs, "app_paused"); t != nil {
				tasks = append(tasks, t)
			}
			w.hold(rec, msgs, now, until)
			continue
		}
		rec.inflight = msgs
		rec.push = &pushInfo{count: p.Count, seq: p.Seq, previous: rec.state.LastPushedCount, exact: rec.state.Exact,
			subs: subs, notes: notifications(rec.tenant, p.Count, subs)}
		rec.job = &job{w: w, key: rec.key, notes: rec.push.notes}
		w.d.sender.submit(rec.job)
	}
	w.settle(ctx, tasks, now)
}

// notifications builds the notifications of one push: one per language and
// background-sync choice among the devices, each with at most
// relayproto.MaxRecipients devices.
func notifications(tenant string, count int, subs []subscriptions.Subscription) []relayproto.Notification {
	type group struct {
		language   string
		sync       bool
		recipients []relayproto.Recipient
	}
	// A user's devices share a few languages at most: a linear search
	// over the groups, in order of appearance, costs less than a map.
	var groups []group
	for _, s := range subs {
		language, sync := s.Language, s.Options.Has(subscriptions.OptionBackgroundSync)
		i := slices.IndexFunc(groups, func(g group) bool { return g.language == language && g.sync == sync })
		if i < 0 {
			groups = append(groups, group{language: language, sync: sync})
			i = len(groups) - 1
		}
		groups[i].recipients = append(groups[i].recipients, relayproto.Recipient{
			AppID: s.AppID, DeviceID: s.DeviceID, LastSubscriptionUpdate: s.LastSubscriptionUpdate, InstallationID: s.InstallationID,
		})
	}
	var out []relayproto.Notification
	for _, g := range groups {
		recipients := g.recipients
		for len(recipients) > 0 {
			n := min(len(recipients), relayproto.MaxRecipients)
			p := relayproto.Payload{TenantID: tenant, UnseenEmailCount: count, Language: g.language}
			if g.sync {
				p.BackgroundSyncType = relayproto.BackgroundSyncEmail
			}
			out = append(out, relayproto.Notification{ID: uuid.NewString(), Payload: p, Recipients: recipients[:n]})
			recipients = recipients[n:]
		}
	}
	return out
}

// handleResults settles the relay's answers.
func (w *worker) handleResults(ctx context.Context, rs []result) {
	now := time.Now()
	var tasks []*settleTask
	for _, r := range rs {
		rec := w.users[r.key]
		if rec == nil || rec.push == nil {
			continue
		}
		push, msgs := rec.push, rec.inflight
		rec.push, rec.inflight, rec.job = nil, nil, nil
		rec.attempts += r.attempts
		switch r.outcome {
		case outcomeDisabled:
			w.co.Failed(now, rec.key, time.Time{})
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, skip: "proxy_disabled"})
		case outcomeRetry:
			hint := r.retryAfter
			if r.reason == "relay_unavailable" {
				// The relay client's own breaker: its next trial is no
				// later than MaxRetryDelay away, so that a changed relay
				// Uri (which resets it) reaches the push soon.
				hint = min(hint, w.d.cfg.MaxRetryDelay)
			}
			if r.reason != "shutdown" {
				var t *settleTask
				if t, msgs = keepLatest(rec, msgs, "held"); t != nil {
					tasks = append(tasks, t)
				}
			}
			w.requeue(rec, msgs, now, r.reason, hint)
		case outcomeDead:
			w.co.Failed(now, rec.key, time.Time{})
			w.d.metrics.pushes.WithLabelValues("failed").Inc()
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, dead: w.deadLetters(rec, push.notes, msgs, r.reason, errString(r.err), nil, now)})
			rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
		case outcomeAnswered:
			if t := w.answered(ctx, rec, push, msgs, r, now); t != nil {
				tasks = append(tasks, t)
			}
		}
	}
	w.settle(ctx, tasks, now)
}

// keepLatest splits a held-back push's events: all but the user's latest
// are settled at once by the returned task (the state, written before
// they are acknowledged, has them all), and the latest stays
// unacknowledged, which is enough for a new owner to push the count after
// a crash. So a relay outage or an app fault holds one event per user, not
// a backlog that grows with the outage and stops the partition for
// everyone, and when the relay is back each user's one push carries the
// latest count. The task is nil when there is one event or none.
func keepLatest(rec *userRec, msgs []*held, reason string) (*settleTask, []*held) {
	n := len(msgs)
	if n < 2 {
		return nil, msgs
	}
	return &settleTask{rec: rec, msgs: msgs[:n-1], skip: reason}, msgs[n-1:]
}

// hold puts a push back until a paused tenant+app lets a trial through;
// it does not count as a retry.
func (w *worker) hold(rec *userRec, msgs []*held, now, until time.Time) {
	if first := now.Add(w.d.cfg.RetryDelay); until.Before(first) {
		until = first
	}
	w.co.Failed(now, rec.key, until)
	rec.pending = append(msgs, rec.pending...)
	w.d.metrics.requeued.WithLabelValues("app_paused").Inc()
	w.d.metrics.pushes.WithLabelValues("requeued").Inc()
}

// requeue puts a push back to be tried after a back-off.
func (w *worker) requeue(rec *userRec, msgs []*held, now time.Time, reason string, hint time.Duration) {
	rec.requeues++
	delay := w.d.cfg.RetryDelay << min(rec.requeues-1, 20)
	delay = min(max(delay, w.d.cfg.RetryDelay), w.d.cfg.MaxRetryDelay)
	if reason == "relay_unavailable" {
		// The relay client's breaker tries the relay every cool-down; a
		// push held for a down relay tries as often, so that it goes out
		// within a cool-down of the relay's return, not a growing back-off.
		delay = min(delay, w.d.cfg.Relay.BreakerMaxCooldown)
	}
	delay = max(delay, hint)
	w.co.Failed(now, rec.key, now.Add(delay))
	rec.pending = append(msgs, rec.pending...)
	w.d.metrics.requeued.WithLabelValues(reason).Inc()
	w.d.metrics.pushes.WithLabelValues("requeued").Inc()
}

// answered acts on the per-device results of a push the relay accepted,
// through the delivery path: device gone (a verdict newer than the
// subscription) removes the subscription with a tombstone; an app fault
// touches no subscription and feeds the tenant+app breaker; transient
// devices requeue the push (a back-off the relay asked for does not use the
// retry budget). The removals are I/O on the worker's loop, but rare.
func (w *worker) answered(ctx context.Context, rec *userRec, push *pushInfo, msgs []*held, r result, now time.Time) *settleTask {
	dl := w.d.sender.path.get(w.d)
	p := pushOf(rec, push, msgs)
	a := delivery.Classify(p, r.results)
	for _, key := range dl.Settle(ctx, p, a) {
		w.d.index.Forget(key)
		w.d.metrics.devicesRemoved.WithLabelValues("gone").Inc()
	}
	delivered := a.DeliveredTotal()

	if a.Retry() {
		if a.BackOff > 0 && len(a.Missing) == 0 {
			// The relay asked to wait: not a retry of the budget.
			w.requeue(rec, msgs, now, "device_backoff", a.BackOff)
			return nil
		}
		rec.deviceRetries++
		if rec.deviceRetries <= w.d.cfg.MaxPushRetries {
			w.requeue(rec, msgs, now, "device_retry", 0)
			return nil
		}
		reason, lastErr, notes := ReasonDeviceRetries, "devices kept asking for a retry", retried(push.notes, a)
		if len(a.Missing) > 0 {
			reason, lastErr = ReasonMissingResponse, "the relay's answers did not include the notification"
		}
		w.co.Failed(now, rec.key, time.Time{})
		w.d.metrics.pushes.WithLabelValues("failed").Inc()
		t := &settleTask{rec: rec, msgs: msgs, dead: w.deadLetters(rec, notes, msgs, reason, lastErr, nil, now)}
		rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
		return t
	}
	if delivered == 0 && len(a.AppFaults) > 0 {
		// No device got it because of app faults: keep the events and
		// every subscription; the breaker paces the next try.
		w.hold(rec, msgs, now, now.Add(w.d.cfg.RetryDelay))
		return nil
	}

	first, last, _ := span(msgs)
	rec.state, rec.dirty = rec.state.Pushed(push.count, push.seq, now), true
	w.co.Delivered(now, rec.key, push.count)
	w.d.metrics.pushes.WithLabelValues("sent").Inc()
	w.d.metrics.pushLatency.Observe(r.took.Seconds())
	sent := dl.SentRecord(p, a, r.batchID, rec.attempts, r.took)
	sent.FirstSeq, sent.LastSeq = first, max(last, push.seq)
	if !p.FirstEventAt.IsZero() {
		w.d.metrics.eventToPush.Observe(sent.EventToPushMS / 1000)
	}
	rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
	return &settleTask{rec: rec, msgs: msgs, sent: &sent}
}

// retried returns the notes of the devices still asking for a retry.
func retried(notes []relayproto.Notification, a delivery.Answer) []relayproto.Notification {
	byNote := map[string][]relayproto.Recipient{}
	for _, d := range a.Transient {
		byNote[d.NotificationID] = append(byNote[d.NotificationID], d.Recipient)
	}
	var out []relayproto.Notification
	for _, n := range notes {
		if rcs := byNote[n.ID]; len(rcs) > 0 {
			n.Recipients = rcs
			out = append(out, n)
		}
	}
	return append(out, a.Missing...)
}

// span returns the first and last sequence of msgs and the earliest event time.
func span(msgs []*held) (first, last uint64, earliest time.Time) {
	for _, h := range msgs {
		if first == 0 || h.seq < first {
			first = h.seq
		}
		last = max(last, h.seq)
		if !h.at.IsZero() && (earliest.IsZero() || h.at.Before(earliest)) {
			earliest = h.at
		}
	}
	return first, last, earliest
}

// deadLetters builds the dead letters of a push's notes.
func (w *worker) deadLetters(rec *userRec, notes []relayproto.Notification, msgs []*held, reason, lastErr string, deviceReasons map[string]string, _ time.Time) []DeadLetter {
	p := pushOf(rec, &pushInfo{notes: notes}, msgs)
	return w.d.sender.path.get(w.d).DeadLetters(p, notes, reason, lastErr, rec.attempts, deviceReasons)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// settle runs the tasks' I/O in parallel, then acknowledges the events of
// those that succeeded. A task that failed puts its events back and asks
// the coalescer to come back to the user later.
func (w *worker) settle(ctx context.Context, tasks []*settleTask, now time.Time) {
	if len(tasks) == 0 {
		return
	}
	_ = parallel(w.d.cfg.IOConcurrency, len(tasks), func(i int) error {
		t := tasks[i]
		t.ok = w.persist(ctx, t)
		return nil
	})
	for _, t := range tasks {
		rec := t.rec
		if !t.ok {
			w.d.metrics.settleFailures.Inc()
			rec.pending = append(t.msgs, rec.pending...)
			if len(rec.pending) > 0 || rec.state.NeedsPush() {
				w.co.Observe(now, rec.key, coalesce.Update{Count: rec.state.Count, Change: coalesce.Decrease, Pushed: rec.state.LastPushedCount})
			}
			continue
		}
		// Metrics first: whoever sees the acks sees the metrics too.
		if len(t.msgs) > 0 {
			w.d.metrics.eventsPerPush.Observe(float64(len(t.msgs)))
			w.d.metrics.acked.Add(float64(len(t.msgs)))
		}
		if t.skip != "" {
			w.d.metrics.skipped.WithLabelValues(t.skip).Inc()
		}
		for _, h := range t.msgs {
			if err := h.msg.Ack(); err != nil {
				w.log.Debug().Err(err).Uint64("seq", h.seq).Msg("acknowledging")
			}
			w.forget(h)
		}
		if t.merged && rec.push == nil && len(rec.pending) == 0 && rec.state.NeedsPush() {
			w.co.Observe(now, rec.key, coalesce.Update{Count: rec.state.Count, Change: coalesce.Decrease, Pushed: rec.state.LastPushedCount})
		}
	}
}

// persist writes what a task records, through the delivery path: dead
// letters first (they are the events' record once acknowledged), then the
// state, then the sent record, which is best effort. (Removals of gone
// devices happen when the answer is read, see answered.)
func (w *worker) persist(ctx context.Context, t *settleTask) bool {
	dl := w.d.sender.path.get(w.d)
	for _, dead := range t.dead {
		if err := dl.DeadLetter(ctx, dead); err != nil {
			w.log.Warn().Err(err).Msg("publishing a dead letter")
			return false
		}
		w.d.metrics.deadLetters.WithLabelValues(dead.Reason).Inc()
	}
	if t.rec.dirty {
		if err := w.writeState(ctx, t); err != nil {
			w.log.Warn().Err(err).Msg("writing unread state")
			return false
		}
	}
	if t.sent != nil {
		if err := dl.RecordSent(ctx, *t.sent, true); err != nil {
			w.log.Debug().Err(err).Msg("recording a sent push")
		}
	}
	return true
}

// writeState writes the user's state with a revision check. On a conflict
// (another writer: a dispatcher that lost the partition, an operator) it
// reads the stored state, applies on top of it the events this worker holds
// for the user, keeps the newer push record, and writes again.
func (w *worker) writeState(ctx context.Context, t *settleTask) error {
	rec := t.rec
	rev, err := w.d.unread.Put(ctx, rec.key, rec.state, rec.rev)
	if errors.Is(err, unread.ErrConflict) {
		w.d.metrics.stateConflicts.Inc()
		cur, curRev, gerr := w.d.unread.Get(ctx, rec.key)
		if gerr != nil {
			return gerr
		}
		all := append(append(append([]*held(nil), t.msgs...), rec.inflight...), rec.pending...)
		sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
		merged := cur
		for _, h := range all {
			// Held events were valid when they were applied; decode again
			// rather than keep every decoded event in memory.
			if e, err := decodeEvent(h.msg.Data()); err == nil {
				merged, _ = unread.Apply(merged, &e, h.seq, w.d.cfg.Unread)
			}
		}
		if rec.state.LastPushedAt.After(merged.LastPushedAt) {
			merged.LastPushedCount, merged.LastPushedAt, merged.LastPushedSeq = rec.state.LastPushedCount, rec.state.LastPushedAt, rec.state.LastPushedSeq
		}
		rec.state, rec.rev, t.merged = merged, curRev, true
		rev, err = w.d.unread.Put(ctx, rec.key, rec.state, rec.rev)
	}
	if err != nil {
		return err
	}
	rec.rev, rec.dirty = rev, false
	return nil
}
