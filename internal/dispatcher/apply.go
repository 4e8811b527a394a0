package dispatcher

// Applying events: decode, check against the subject, load user states and
// hand the events to the partition's ledger (package badges).

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/events"
)

// clockTolerance is how far ahead of this dispatcher's clock an event's
// receipt time may be before it counts in events_received_ahead_total:
// hosts synchronised by NTP agree to well within it.
const clockTolerance = time.Second

// receive records delivered messages; while syncing they wait, otherwise
// they are applied at once.
func (w *worker) receive(ctx context.Context, msgs []jetstream.Msg) {
	now := time.Now()
	// The held events are allocated heldSlab at a time rather than one by
	// one; a slab lives until its last event is settled.
	var slab []held
	for i, m := range msgs {
		if pin := m.Headers().Get(pinHeader); pin != "" && pin != w.pin {
			if w.pin != "" {
				w.repinned()
			}
			w.pin = pin
			w.log.Debug().Str("pin", pin).Msg("pinned")
		}
		// The library's parser: a hand-written one saved about 180 ns an
		// event, well under 1% of what applying one costs.
		md, err := m.Metadata()
		if err != nil {
			w.log.Warn().Err(err).Msg("message without JetStream metadata")
			w.heldN.Add(-1)
			continue
		}
		if w.missedDelivery(md.Sequence.Consumer) {
			w.resync()
		}
		seq := md.Sequence.Stream
		if md.NumDelivered > 1 {
			w.env.metrics.redelivered.Inc()
			if h := w.findHeld(m.Subject(), seq); h != nil {
				// Redelivered while held: keep the newest handle.
				h.reply, h.touched = m.Reply(), now
				w.heldN.Add(-1)
				continue
			}
		}
		if len(slab) == 0 {
			slab = make([]held, min(heldSlab, len(msgs)-i))
		}
		h := &slab[0]
		slab = slab[1:]
		*h = held{received: receivedOf(m), seq: seq, touched: now}
		if w.syncing {
			w.holdForSync(h)
		} else {
			w.ready = append(w.ready, h)
		}
	}
	if w.syncing {
		w.catchUp(ctx)
	}
	w.apply(ctx, now)
}

// apply decodes the ready events, loads the states of users not cached,
// checks users against the stream (gaps.go) and applies the events in
// order to the ledger.
func (w *worker) apply(ctx context.Context, now time.Time) {
	for len(w.ready) > 0 && w.applyReady(ctx, now) {
	}
}

// applyReady applies the ready events; true when it made them ready
// again, with events a check found missing.
func (w *worker) applyReady(ctx context.Context, now time.Time) (again bool) {
	ready := w.ready
	w.ready = nil
	keep := ready[:0]
	evs := w.evs[:0] // evs[i] is keep[i]'s event
	defer func() {
		clear(evs) // drop the strings until the next batch
		w.evs = evs[:0]
	}()
	var load []*user
	var loading map[*user]bool // users already in load, when any
	for _, h := range ready {
		key, ok := userKeyOf(h.subject)
		if !ok {
			w.terminate(h, "subject is not mail.<partition>.<tenant>.<user>")
			continue
		}
		u := w.ledger.User(key)
		var known knownStrings
		if u != nil {
			known = knownStrings{tenant: u.Tenant, user: u.Name}
		}
		var e events.Event
		var err error
		if w.env.cfg.LibraryDecode {
			e, err = events.Decode(h.data)
		} else {
			e, err = decodeEventKnown(h.data, known, &w.validator)
		}
		if err != nil {
			w.terminate(h, err.Error())
			continue
		}
		// The keyed hash is checked once per user and spelling.
		if (u == nil || u.Tenant != e.Tenant || u.Name != e.User) && w.env.keyer.UserKey(e.Tenant, e.User) != key {
			w.terminate(h, "the event's tenant and user do not match its subject")
			continue
		}
		evs = append(evs, e)
		h.at = e.ReceivedAt
		if h.at.IsZero() {
			h.at = e.OccurredAt
		} else {
			age := now.Sub(h.at)
			if age < -clockTolerance {
				w.env.metrics.eventsAhead.Inc()
			}
			w.env.metrics.eventAge.Observe(max(age, 0).Seconds())
		}
		if u == nil {
			u = w.ledger.Add(key, e.Tenant, e.User)
		}
		if !u.Loaded() && !loading[u] {
			if loading == nil {
				loading = map[*user]bool{}
			}
			loading[u] = true
			load = append(load, u)
		}
		h.user = u
		keep = append(keep, h)
	}
	ok := w.load(ctx, load)
	var gaps []*gapCheck
	if ok {
		gaps = w.gapChecks(keep)
		ok = w.checkGaps(ctx, gaps)
	}
	if !ok {
		// Shutting down: leave the events unacknowledged for redelivery.
		for _, h := range keep {
			w.forget(h)
		}
		return false
	}
	if withMissing, found := w.withMissing(gaps, keep, now); found {
		w.ready = withMissing
		return true
	}
	nApplied := 0
	for i, h := range keep {
		prev := h.user.State().LastSeq
		if w.ledger.Apply(now, h.user, &evs[i], h) {
			nApplied++
			if h.gap {
				w.gapApplied(h, prev)
			}
		}
	}
	w.env.metrics.applied.Add(float64(nApplied))
	w.env.metrics.alreadyApplied.Add(float64(len(keep) - nApplied))
	return false
}

// load reads the states of users (distinct), retrying until it works,
// ctx ends, the worker is asked to stop or the connection is closed.
func (w *worker) load(ctx context.Context, users []*user) bool {
	var unloaded []*user
	for _, u := range users {
		if !u.Loaded() {
			unloaded = append(unloaded, u)
		}
	}
	if len(unloaded) == 0 {
		return true
	}
	// One batched read for all of them, rather than a request each.
	keys := make([]string, len(unloaded))
	for i, u := range unloaded {
		keys[i] = u.Key
	}
	return w.untilDone(ctx, "reading unread states", func(ctx context.Context) error {
		// Their devices are read meanwhile, for the pushes to come.
		w.env.devs.Prefetch(keys)
		got, err := w.env.unread.GetMany(ctx, keys)
		if err != nil {
			return err
		}
		for i, u := range unloaded {
			w.ledger.Load(u, got[i].State, got[i].Rev)
		}
		return nil
	})
}

// untilDone runs f until it succeeds, backing off between attempts; false
// when ctx ends, the worker is asked to stop (handing over) or the
// connection is closed (killed or cut off): the next owner reads the
// events again.
func (w *worker) untilDone(ctx context.Context, what string, f func(context.Context) error) bool {
	for attempt := 0; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return true
		}
		if w.env.nc.IsClosed() {
			return false
		}
		w.log.Warn().Err(err).Msg(what + "; retrying")
		select {
		case <-ctx.Done():
			return false
		case <-w.stop:
			return false
		case <-time.After(min(100*time.Millisecond<<min(attempt, 6), 5*time.Second)):
		}
	}
}

// terminate ends an event that can never be applied; the server emits a
// MSG_TERMINATED advisory that stream ADVISORIES keeps.
func (w *worker) terminate(h *held, reason string) {
	if len(reason) > maxTermReason {
		reason = reason[:maxTermReason]
	}
	if h.reply == "" {
		// A copy read from the stream: its delivery is terminated, by
		// whichever dispatcher it went to.
		w.log.Debug().Uint64("seq", h.seq).Str("reason", reason).Msg("an invalid event read from the stream")
		w.forget(h)
		return
	}
	if err := w.term(h.received, reason); err != nil {
		w.log.Warn().Err(err).Uint64("seq", h.seq).Msg("terminating an invalid event")
	}
	w.log.Warn().Uint64("seq", h.seq).Str("reason", reason).Msg("terminated an invalid event")
	w.env.metrics.invalid.Inc()
	w.forget(h)
}

// forget drops a held event without acknowledging it.
func (w *worker) forget(h *held) {
	if !h.released {
		h.released = true
		w.heldN.Add(-1)
		w.signalWake()
	}
}
