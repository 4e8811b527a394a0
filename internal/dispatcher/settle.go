package dispatcher

// Pushing and settling: due pushes become notifications, the relay's
// answers become acks, requeues, dead letters and pruned subscriptions, and
// the user's state is written before its events are acknowledged.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/pushproxy/pushproxy/internal/coalesce"
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
			w.requeue(rec, msgs, now, r.reason, r.retryAfter)
		case outcomeDead:
			w.co.Failed(now, rec.key, time.Time{})
			w.d.metrics.pushes.WithLabelValues("failed").Inc()
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, dead: w.deadLetters(rec, push.notes, msgs, r.reason, errString(r.err), nil, now)})
			rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
		case outcomeAnswered:
			if t := w.answered(rec, push, msgs, r, now); t != nil {
				tasks = append(tasks, t)
			}
		}
	}
	w.settle(ctx, tasks, now)
}

// requeue puts a push back to be tried after a back-off.
func (w *worker) requeue(rec *userRec, msgs []*held, now time.Time, reason string, hint time.Duration) {
	rec.requeues++
	delay := w.d.cfg.RetryDelay << min(rec.requeues-1, 20)
	delay = min(max(delay, w.d.cfg.RetryDelay), w.d.cfg.MaxRetryDelay)
	delay = max(delay, hint)
	w.co.Failed(now, rec.key, now.Add(delay))
	rec.pending = append(msgs, rec.pending...)
	w.d.metrics.requeued.WithLabelValues(reason).Inc()
	w.d.metrics.pushes.WithLabelValues("requeued").Inc()
}

// answered acts on the per-device results of a push the relay accepted.
func (w *worker) answered(rec *userRec, push *pushInfo, msgs []*held, r result, now time.Time) *settleTask {
	// The lookups below are built only when a device is gone or rejected:
	// most pushes are delivered to every device and need none of them.
	var subByDevice map[string]subscriptions.Subscription
	subOf := func(appID, deviceID string) (subscriptions.Subscription, bool) {
		if subByDevice == nil {
			subByDevice = make(map[string]subscriptions.Subscription, len(push.subs))
			for _, s := range push.subs {
				subByDevice[s.AppID+"\x00"+s.DeviceID] = s
			}
		}
		s, ok := subByDevice[appID+"\x00"+deviceID]
		return s, ok
	}
	var (
		removals   []removal
		rejected   map[string][]relayproto.Recipient // by notification id
		reasons    map[string]string
		retry      bool
		missing    bool
		backoff    time.Duration
		recipients int
		nRejected  int
		nGone      int
	)
	for _, n := range push.notes {
		recipients += len(n.Recipients)
		nr, ok := resultFor(r.results, n.ID)
		if !ok {
			missing = true
			continue
		}
		for _, dr := range nr.Devices {
			switch dr.Status {
			case relayproto.DeviceGone:
				nGone++
				if sub, known := subOf(dr.AppID, dr.DeviceID); known {
					ref := subscriptions.DeviceRef(dr.AppID, dr.DeviceID)
					removals = append(removals, removal{key: sub.Key, status: "gone", reason: dr.Reason, ref: ref})
				}
			case relayproto.DeviceRejected:
				nRejected++
				ref := subscriptions.DeviceRef(dr.AppID, dr.DeviceID)
				if reasons == nil {
					reasons, rejected = map[string]string{}, map[string][]relayproto.Recipient{}
				}
				reasons[ref] = dr.Reason
				for _, rc := range n.Recipients {
					if rc.AppID == dr.AppID && rc.DeviceID == dr.DeviceID {
						rejected[n.ID] = append(rejected[n.ID], rc)
					}
				}
				if sub, known := subOf(dr.AppID, dr.DeviceID); known {
					removals = append(removals, removal{key: sub.Key, status: "rejected", reason: dr.Reason, ref: ref})
				}
			case relayproto.DeviceRetry:
				retry = true
				backoff = max(backoff, time.Duration(dr.BackOffTimeInMilliseconds)*time.Millisecond)
			}
		}
	}
	if retry || missing {
		rec.deviceRetries++
		if rec.deviceRetries <= w.d.cfg.MaxPushRetries {
			w.requeue(rec, msgs, now, "device_retry", min(backoff, relayproto.MaxBackOff))
			if len(removals) == 0 {
				return nil
			}
			return &settleTask{rec: rec, remove: removals}
		}
		reason, lastErr := ReasonDeviceRetries, "devices kept asking for a retry"
		if missing {
			reason, lastErr = ReasonMissingResponse, "the relay's answers did not include the notification"
		}
		w.co.Failed(now, rec.key, time.Time{})
		w.d.metrics.pushes.WithLabelValues("failed").Inc()
		rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
		return &settleTask{rec: rec, msgs: msgs, remove: removals, dead: w.deadLetters(rec, push.notes, msgs, reason, lastErr, nil, now)}
	}

	t := &settleTask{rec: rec, msgs: msgs, remove: removals}
	for _, n := range push.notes {
		if rc := rejected[n.ID]; len(rc) > 0 {
			dn := n
			dn.Recipients = rc
			t.dead = append(t.dead, w.deadLetters(rec, []relayproto.Notification{dn}, msgs, ReasonRejected, "the relay rejected the device", reasons, now)...)
		}
	}
	if nRejected == recipients {
		w.co.Failed(now, rec.key, time.Time{})
		w.d.metrics.pushes.WithLabelValues("failed").Inc()
	} else {
		first, last, earliest := span(msgs)
		rec.state, rec.dirty = rec.state.Pushed(push.count, push.seq, now), true
		w.co.Delivered(now, rec.key, push.count)
		w.d.metrics.pushes.WithLabelValues("sent").Inc()
		w.d.metrics.pushLatency.Observe(r.took.Seconds())
		rec2p := 0.0
		if !earliest.IsZero() {
			rec2p = now.Sub(earliest).Seconds()
			w.d.metrics.eventToPush.Observe(rec2p)
		}
		t.sent = &SentRecord{
			ID: push.notes[0].ID, BatchID: r.batchID, Tenant: rec.tenant, UserKey: rec.key,
			Count: push.count, Exact: push.exact, Previous: push.previous,
			FirstSeq: first, LastSeq: max(last, push.seq), Events: len(msgs),
			Devices: recipients, Gone: nGone, Rejected: nRejected, Attempts: rec.attempts,
			LatencyMS: float64(r.took.Microseconds()) / 1000, EventToPushMS: rec2p * 1000, SentAt: now.UTC(),
		}
	}
	rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
	return t
}

// resultFor finds the relay's result for notification id among results,
// which hold one push's few notifications.
func resultFor(results []relayproto.NotificationResult, id string) (relayproto.NotificationResult, bool) {
	for _, nr := range results {
		if nr.ID == id {
			return nr, true
		}
	}
	return relayproto.NotificationResult{}, false
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

func (w *worker) deadLetters(rec *userRec, notes []relayproto.Notification, msgs []*held, reason, lastErr string, deviceReasons map[string]string, now time.Time) []DeadLetter {
	seqs := make([]uint64, 0, len(msgs))
	for _, h := range msgs {
		seqs = append(seqs, h.seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	_, _, earliest := span(msgs)
	out := make([]DeadLetter, 0, len(notes))
	for _, n := range notes {
		out = append(out, DeadLetter{
			Tenant: rec.tenant, User: rec.user, UserKey: rec.key, Reason: reason,
			Attempts: rec.attempts, LastError: lastErr, Sequences: seqs, Notification: n,
			DeviceReasons: deviceReasons, FirstEventAt: earliest, DeadAt: now.UTC(),
		})
	}
	return out
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

// persist writes what a task records: dead letters first (they are the
// events' record once acknowledged), then the state, then the sent record
// and the removals, which are best effort.
func (w *worker) persist(ctx context.Context, t *settleTask) bool {
	for _, dl := range t.dead {
		data, err := json.Marshal(dl)
		if err != nil {
			w.log.Error().Err(err).Msg("encoding a dead letter")
			return false
		}
		if _, err := w.d.js.Publish(ctx, DeadSubject(t.rec.key), data); err != nil {
			w.log.Warn().Err(err).Msg("publishing a dead letter")
			return false
		}
		w.d.metrics.deadLetters.WithLabelValues(dl.Reason).Inc()
		w.log.Warn().Str("tenant", dl.Tenant).Str("user", dl.User).Str("reason", dl.Reason).Int("attempts", dl.Attempts).
			Str("last_error", dl.LastError).Int("events", len(dl.Sequences)).Msg("notification dead-lettered")
	}
	if t.rec.dirty {
		if err := w.writeState(ctx, t); err != nil {
			w.log.Warn().Err(err).Msg("writing unread state")
			return false
		}
	}
	if t.sent != nil {
		data, err := json.Marshal(t.sent)
		if err == nil {
			_, err = w.d.js.PublishMsgAsync(&nats.Msg{Subject: SentSubject(t.rec.key), Data: data})
		}
		if err != nil {
			w.log.Debug().Err(err).Msg("recording a sent push")
		}
	}
	for _, r := range t.remove {
		err := w.d.subs.DeleteKey(ctx, r.key)
		w.d.index.Forget(r.key)
		if err != nil && !errors.Is(err, subscriptions.ErrNotFound) {
			w.log.Warn().Err(err).Str("device", r.ref).Msg("removing a device subscription")
			continue
		}
		w.d.metrics.devicesRemoved.WithLabelValues(r.status).Inc()
		w.log.Info().Str("tenant", t.rec.tenant).Str("device", r.ref).Str("status", r.status).Str("reason", r.reason).
			Msg("device subscription removed on the relay's word")
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
