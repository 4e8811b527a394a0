package reconcile

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
)

// watch reads the MAIL stream from as far back as a check could still be
// owed, so a restart loses none: EstimatedDelay ago for events without a
// count, FollowUp ago for events of one-way sources, whose users are
// followed up that long. It queues the user of every event that leaves
// the count an estimate; an event with the count drops the user's queued
// check.
func (r *Reconciler) watch(ctx context.Context) error {
	now := r.cfg.Now()
	estimatedFrom := now.Add(-r.cfg.EstimatedDelay)
	start := estimatedFrom
	if r.cfg.FollowUp > r.cfg.EstimatedDelay && len(r.cfg.OneWaySources) > 0 {
		start = now.Add(-r.cfg.FollowUp)
	}
	cons, err := r.cfg.JS.OrderedConsumer(ctx, broker.StreamMail, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return fmt.Errorf("reading stream %s for estimated counts: %w", broker.StreamMail, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) { r.noteEvent(msg, estimatedFrom) })
	if err != nil {
		return fmt.Errorf("reading stream %s for estimated counts: %w", broker.StreamMail, err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

// noteEvent queues or unqueues the event's user. The estimated check of
// an event stored before estimatedFrom was due before this reader
// started.
func (r *Reconciler) noteEvent(msg jetstream.Msg, estimatedFrom time.Time) {
	e, err := events.Decode(msg.Data())
	if err != nil {
		return
	}
	if e.Source == events.SourceCanary || e.Source == events.SourceReconcile {
		return
	}
	stored := r.cfg.Now()
	if md, err := msg.Metadata(); err == nil {
		stored = md.Timestamp
	}
	r.note(&e, stored, stored.Before(estimatedFrom))
}

// note queues the user of an event for a check EstimatedDelay after
// stored when the event leaves the count an estimate (no count, and a
// change of it or a change an opaque source does not describe) or comes
// from a source that does not report reads (followed up for FollowUp),
// and drops the queued check of a user whose event carried the count.
// With past set, the event's estimated check was due before the reader
// started (the reconciler made it before a restart): only a follow-up or
// a count still changes the queue.
func (r *Reconciler) note(e *events.Event, stored time.Time, past bool) {
	key := r.cfg.Keyer.UserKey(e.Tenant, e.User)
	in := entry{key: key, user: User{Tenant: e.Tenant, User: e.User}, due: stored.Add(r.cfg.EstimatedDelay)}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.oneWay(e.Source) && r.cfg.FollowUp > 0:
		in.followUntil = stored.Add(r.cfg.FollowUp)
	case e.Unread != nil && e.Mailbox == r.cfg.Mailbox:
		r.queue.remove(key)
		r.m.queued.Set(float64(r.queue.len()))
		return
	case past, e.DeltaFor(r.cfg.Mailbox) == 0 && !r.opaqueChange(e):
		return
	}
	if !r.queue.add(in) {
		r.m.dropped.Inc()
		return
	}
	r.poke()
	r.m.queued.Set(float64(r.queue.len()))
}

// opaqueChange reports whether e is a flag change on Mailbox from a source
// that does not say which flags changed (it may be a read).
func (r *Reconciler) opaqueChange(e *events.Event) bool {
	return e.Kind == events.KindFlags && e.Unread == nil && e.Mailbox == r.cfg.Mailbox && slices.Contains(r.cfg.OpaqueSources, e.Source)
}

// oneWay reports whether source never reports reads.
func (r *Reconciler) oneWay(source events.Source) bool {
	return slices.Contains(r.cfg.OneWaySources, source)
}

// poke wakes checkDue; the caller holds r.mu.
func (r *Reconciler) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// checkDue checks queued users when they are due, MaxBatch at a time, and
// queues again those whose check ended Behind or Raced.
func (r *Reconciler) checkDue(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		due := r.queue.popDue(r.cfg.Now(), MaxBatch)
		next, ok := r.queue.next()
		r.m.queued.Set(float64(r.queue.len()))
		r.mu.Unlock()
		if len(due) > 0 {
			r.checkEntries(ctx, due)
			continue
		}
		wait := time.Hour
		if ok {
			wait = max(next.Sub(r.cfg.Now()), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (r *Reconciler) checkEntries(ctx context.Context, due []*entry) {
	users := make([]User, len(due))
	for i, e := range due {
		users[i] = e.user
	}
	results := r.Check(ctx, TriggerEstimated, users)
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, res := range results {
		e := *due[i]
		switch res.Outcome {
		case Behind, Raced:
			e.tries++
			e.due = now.Add(r.cfg.RetryDelay)
			if e.tries >= maxTries || !r.queue.add(e) {
				r.m.dropped.Inc()
			}
		case Match, Confirmed, Corrected:
			// A user whose mail system does not report reads is checked
			// again while unread mail may still be read.
			if res.Truth > 0 && r.oneWay(res.LastSource) && now.Before(e.followUntil) {
				e.tries, e.due = 0, now.Add(r.cfg.EstimatedDelay)
				if !r.queue.add(e) {
					r.m.dropped.Inc()
				}
			}
		}
	}
	r.m.queued.Set(float64(r.queue.len()))
}
