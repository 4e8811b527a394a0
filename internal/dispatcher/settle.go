package dispatcher

// Pushing and settling: the I/O around the partition's ledger (package
// badges). Due users become notifications for the sender or settle at
// once; the relay's answers are classified, gone devices removed, and the
// ledger told; what it settles is written (dead letters, then the state,
// then the sent record) before its events are acknowledged.

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/dispatcher/badges"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// pushDue waits at most devicesWait for the devices of the users it
// pushes to that are not in the cache. When they cannot be read by then
// (the bucket does not answer), the push waits devicesRetryDelay and is
// counted as requeued for requeueDevicesUnread.
const (
	devicesWait          = 2 * time.Second
	devicesRetryDelay    = time.Second
	requeueDevicesUnread = "devices_unread"
)

// pushDue acts on the users whose count is due (all that wait, with
// flush): skips settle at once, the others go to the sender. Nothing
// is taken once the connection is closed: the events stay for the next
// owner.
func (w *worker) pushDue(ctx context.Context, flush bool) {
	if w.env.nc.IsClosed() {
		return
	}
	now := time.Now()
	var due []badges.Due[*held]
	if flush {
		due = w.ledger.Flush(now)
	} else {
		due = w.ledger.Due(now)
	}
	if len(due) == 0 {
		return
	}
	proxy := w.env.proxy()
	// The devices of users not in the cache are read all at once; the
	// loop waits for them at most devicesWait in all, so that a NATS that
	// does not answer holds these pushes, not the partition.
	keys := make([]string, 0, len(due))
	for _, d := range due {
		if !d.Skip {
			keys = append(keys, d.User.Key)
		}
	}
	w.env.devs.Prefetch(keys)
	devCtx, cancel := context.WithTimeout(ctx, devicesWait)
	defer cancel()
	var tasks []*settleTask
	var devErr error
	devWaits := 0
	for _, d := range due {
		u := d.User
		if d.Skip {
			tasks = append(tasks, &settleTask{Settle: w.ledger.Unchanged(d)})
			continue
		}
		if !proxy.enabled {
			tasks = append(tasks, &settleTask{Settle: w.ledger.NotSent(now, d, badges.SkipProxyDisabled)})
			continue
		}
		subs, err := w.env.devices(devCtx, u.Key)
		if err != nil {
			// The devices could not be read: hold the push, without using
			// the retry budget, and try again shortly.
			if devErr == nil {
				devErr = err
			}
			devWaits++
			if s := w.ledger.Held(now, d, now.Add(devicesRetryDelay)); s != nil {
				tasks = append(tasks, &settleTask{Settle: s})
			}
			w.requeued(requeueDevicesUnread)
			continue
		}
		if len(subs) == 0 {
			tasks = append(tasks, &settleTask{Settle: w.ledger.NotSent(now, d, badges.SkipNoSubscriptions)})
			continue
		}
		subs, until := allowed(w.env.deliverer().Breakers(), u.Tenant, subs)
		if len(subs) == 0 {
			// Every app of the user is paused after app faults: hold the
			// push, without using the retry budget, until a trial may go.
			if s := w.ledger.Paused(now, d, until); s != nil {
				tasks = append(tasks, &settleTask{Settle: s})
			}
			w.requeued(badges.RequeueAppPaused)
			continue
		}
		w.ledger.Send(d)
		j := &job{key: u.Key, notes: notifications(u.Tenant, d.Push.Count, subs), answer: w.results, epoch: w.epoch}
		w.jobs[u.Key] = j
		w.env.submit(j)
	}
	if devErr != nil {
		w.log.Warn().Err(devErr).Int("users", devWaits).Msg("reading the devices of users to push to; their pushes wait")
	}
	w.settle(tasks)
}

// requeued counts a push put back to go later.
func (w *worker) requeued(reason string) {
	w.env.metrics.requeued.WithLabelValues(reason).Inc()
	w.env.metrics.pushes.WithLabelValues("requeued").Inc()
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
		u, j := w.ledger.User(r.key), w.jobs[r.key]
		delete(w.jobs, r.key)
		if u == nil || !u.InFlight() || j == nil {
			continue
		}
		var res badges.Result[*held]
		var t *settleTask
		switch r.outcome {
		case outcomeDisabled:
			res = w.ledger.Disabled(now, u, r.attempts)
		case outcomeRetry:
			res = w.ledger.Retry(now, u, r.attempts, r.reason, r.retryAfter)
		case outcomeDead:
			res = w.ledger.Dead(now, u, r.attempts, r.reason)
			if res.Settle != nil {
				w.env.metrics.pushes.WithLabelValues("failed").Inc()
				t = &settleTask{Settle: res.Settle, dead: w.deadLetters(res.Settle, j.notes, errString(r.err))}
			}
		case outcomeAnswered:
			res, t = w.answered(ctx, u, j, r, now)
		}
		if res.Requeued != "" {
			w.requeued(res.Requeued)
		}
		if t == nil && res.Settle != nil {
			t = &settleTask{Settle: res.Settle}
		}
		if t != nil {
			tasks = append(tasks, t)
		}
	}
	w.settle(tasks)
}

// answered applies the per-device results of a push the relay accepted
// through the delivery path (a gone device's subscription is removed
// with a tombstone when the verdict is newer than the subscription; an
// app fault feeds the tenant+app breaker), then lets the ledger decide
// (delivered, retried, held or dead) and says which records a settled push
// leaves. The removals are I/O on the worker's loop, but rare.
func (w *worker) answered(ctx context.Context, u *user, j *job, r result, now time.Time) (badges.Result[*held], *settleTask) {
	dl := w.env.deliverer()
	push, evs, _ := u.Pushing()
	p := pushOf(u, push, j.notes, evs)
	a := delivery.Classify(p, r.results)
	for _, key := range dl.Settle(ctx, p, a) {
		w.env.devs.Forget(key)
		w.env.metrics.devicesRemoved.WithLabelValues("gone").Inc()
	}
	res := w.ledger.Answered(now, u, r.attempts, badges.Answer{Delivered: a.DeliveredTotal(), Transient: len(a.Transient) > 0,
		Missing: len(a.Missing) > 0, BackOff: a.BackOff, AppFaults: len(a.AppFaults) > 0})
	s := res.Settle
	switch {
	case s == nil:
		return res, nil
	case s.Dead != "":
		w.env.metrics.pushes.WithLabelValues("failed").Inc()
		lastErr := "devices kept asking for a retry"
		if s.Dead == ReasonMissingResponse {
			lastErr = "the relay's answers did not include the notification"
		}
		return res, &settleTask{Settle: s, dead: w.deadLetters(s, retried(j.notes, a), lastErr)}
	}
	w.env.metrics.pushes.WithLabelValues("sent").Inc()
	w.env.metrics.pushLatency.Observe(r.took.Seconds())
	sent := dl.SentRecord(p, a, r.batchID, s.Attempts, r.took)
	first, last, _ := span(s.Events)
	sent.FirstSeq, sent.LastSeq = first, max(last, s.Push.Seq)
	if !p.FirstEventAt.IsZero() {
		w.env.metrics.eventToPush.Observe(sent.EventToPushMS / 1000)
	}
	return res, &settleTask{Settle: s, sent: &sent}
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

// span returns the first and last sequence of evs and the earliest event time.
func span(evs []*held) (first, last uint64, earliest time.Time) {
	for _, h := range evs {
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

// deadLetters builds the dead letters of a dead push's notes.
func (w *worker) deadLetters(s *badges.Settle[*held], notes []relayproto.Notification, lastErr string) []DeadLetter {
	p := pushOf(s.User, s.Push, notes, s.Events)
	return w.env.deliverer().DeadLetters(p, notes, s.Dead, lastErr, s.Attempts, nil)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// settle starts the tasks' I/O, which the partition's writers do
// (startWriters) while the loop goes on applying and pushing; each task
// comes back through w.settled (finish). A
// user's tasks are written one after another, so that revisions follow
// one another and a conflict is merged once.
func (w *worker) settle(tasks []*settleTask) {
	for _, t := range tasks {
		key := t.User.Key
		if w.writing[key] != nil {
			w.waiting[key] = append(w.waiting[key], t)
			continue
		}
		w.start(t)
	}
}

// start takes the snapshot of the user's state that t writes (none when
// nothing changed since the last write) and hands t to the writers.
func (w *worker) start(t *settleTask) {
	w.writing[t.User.Key] = t
	t.write = nil
	if t.User.Dirty() {
		snap := w.ledger.Snapshot(t.User)
		t.write = &snap
	}
	w.toWrite.Push(t)
}

// startWriters starts the goroutines that do the settle tasks' I/O, at
// most IOConcurrency at once, until the worker ends. They live as long
// as the worker, so that their stacks, grown once, are kept.
func (w *worker) startWriters(ctx context.Context) {
	for range w.env.cfg.IOConcurrency {
		go func() {
			for {
				select {
				case <-w.quit:
					return
				case <-w.toWrite.C():
					for _, t := range w.toWrite.Take(1) {
						w.persist(ctx, t)
						w.settled.Push(t)
					}
				}
			}
		}()
	}
}

// finish ends tasks whose I/O is done: it acknowledges the events of
// those that succeeded and tells the ledger; a task that failed puts its
// events back, and the ledger comes back to the user later. A write that
// met another writer's state is merged with it (Rebase) and written
// again. Then the user's next task starts.
func (w *worker) finish(tasks []*settleTask) {
	now := time.Now()
	for _, t := range tasks {
		u := t.User
		if c := t.conflict; c != nil {
			w.env.metrics.stateConflicts.Inc()
			t.conflict, t.rebased = nil, true
			// Held events were valid when they were applied; they are
			// decoded again rather than kept decoded in memory.
			w.ledger.Rebase(t.Settle, c.State, c.Rev, func(h *held) (events.Event, error) { return decodeEvent(h.data) })
			w.start(t)
			continue
		}
		delete(w.writing, u.Key)
		w.ended(now, t)
		if next := w.waiting[u.Key]; len(next) > 0 {
			if len(next) == 1 {
				delete(w.waiting, u.Key)
			} else {
				w.waiting[u.Key] = next[1:]
			}
			w.start(next[0])
		}
	}
}

// ended tells the ledger how t's I/O went and, when it succeeded,
// acknowledges t's events.
func (w *worker) ended(now time.Time, t *settleTask) {
	if !t.ok {
		w.env.metrics.settleFailures.Inc()
		w.ledger.Settled(now, t.Settle, false)
		return
	}
	if t.write != nil {
		w.ledger.Stored(t.User, *t.write, t.rev)
	}
	// Metrics first: whoever sees the acks sees the metrics too.
	if t.Skip != "" {
		w.env.metrics.skipped.WithLabelValues(t.Skip).Inc()
	}
	if len(t.Events) > 0 {
		w.env.metrics.eventsPerPush.Observe(float64(len(t.Events)))
		w.env.metrics.acked.Add(float64(len(t.Events)))
	}
	for _, h := range t.Events {
		if err := w.ack(h.received); err != nil {
			w.log.Debug().Err(err).Uint64("seq", h.seq).Msg("acknowledging")
		}
		w.forget(h)
	}
	w.ledger.Settled(now, t.Settle, true)
}

// persist writes what a task records, through the delivery path: dead
// letters first (they are the events' record once acknowledged), then the
// state, then the sent record, which is best effort. It runs off the
// loop: it reads only t and what the loop gave it. (Removals of gone
// devices happen when the answer is read, see answered.)
func (w *worker) persist(ctx context.Context, t *settleTask) {
	if w.env.goneSince(w.epoch) {
		// This dispatcher may have been counted gone (see sender.send):
		// what the worker settles may rest on reads of a server cut off
		// from the others, and stored once the cut heals it would be
		// merged into the new owner's state (Rebase). Nothing is
		// written; the events are held again, and the gap drops the
		// worker.
		return
	}
	dl := w.env.deliverer()
	for ; len(t.dead) > 0; t.dead = t.dead[1:] {
		dead := t.dead[0]
		if err := dl.DeadLetter(ctx, dead); err != nil {
			w.log.Warn().Err(err).Msg("publishing a dead letter")
			return
		}
		w.env.metrics.deadLetters.WithLabelValues(dead.Reason).Inc()
	}
	if t.write != nil {
		sent := time.Now()
		rev, err := w.env.unread.Put(ctx, t.User.Key, t.write.State, t.write.Rev)
		if errors.Is(err, unread.ErrConflict) && !t.rebased {
			// Another writer: a dispatcher that lost the partition, an
			// operator. The loop merges its state with the held events.
			// The state is read from the bucket's leader, which refused
			// the write: a replica behind (a server that was cut off,
			// catching up) may still hold an older state, or none, and
			// the merge would rest on it.
			cur, curRev, gerr := w.env.unread.GetFromLeader(ctx, t.User.Key)
			if gerr != nil {
				w.log.Warn().Err(gerr).Msg("reading unread state after a conflict")
				return
			}
			t.conflict = &unread.Loaded{State: cur, Rev: curRev}
			return
		}
		if err != nil {
			w.log.Warn().Err(err).Msg("writing unread state")
			return
		}
		t.rev = rev
		// A conflict may come from a leader cut off from the others; a
		// stored write cannot.
		w.env.confirmed(sent)
	}
	if t.sent != nil {
		if err := dl.RecordSent(ctx, *t.sent, true); err != nil {
			w.log.Debug().Err(err).Msg("recording a sent push")
		}
	}
	t.ok = true
}
