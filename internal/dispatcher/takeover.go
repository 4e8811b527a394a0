package dispatcher

// Taking a partition over. A worker that has just become a partition's
// consumer (its first pinned delivery, or a new pin after it lost the old
// one) applies nothing until it has caught up: it reads the consumer's ack
// floor and last delivered sequence, and reads every event in between
// straight from the stream. Those are the events another dispatcher may
// have received and not acknowledged (it died, or handed over without
// settling). Applied in stream order, together with what this worker holds,
// they give every user the events it would have seen from a single owner;
// unread.Apply skips those already in a user's stored state. No waiting for
// the server to redeliver them after AckWait, and no counting of what is
// pending, which raced with deliveries in flight. DESIGN.md beside this
// file explains the whole hand-over.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// catchUpTimeout bounds one attempt to read a partition's unacknowledged
// range; a failed attempt is tried again after syncCheckInterval.
const catchUpTimeout = 30 * time.Second

// catchUpRequestTimeout bounds each JetStream API request of a catch-up
// (consumer info, creating the reading consumer). Right after NATS comes
// back a request can go unanswered; trying again soon beats waiting out
// catchUpTimeout while the partition applies nothing.
const catchUpRequestTimeout = 5 * time.Second

// errCatchUpLost is a catch-up read that lost one of its own deliveries.
var errCatchUpLost = errors.New("a delivery of the catch-up read was lost")

// catchUpFetch is how many events one fetch of the catch-up read asks for.
const catchUpFetch = 1000

// setSyncing records whether the worker holds events until it has caught
// up, for the worker itself and, atomically, for the fetch loop. Each
// catch-up starts a new era, in which every user is checked against the
// stream again (gaps.go).
func (w *worker) setSyncing(v bool) {
	if v && !w.syncing {
		w.era++
	}
	w.syncing = v
	w.syncFlag.Store(v)
}

// holdForSync keeps an event until the partition has caught up.
func (w *worker) holdForSync(h *held) {
	if w.syncSeqs == nil {
		w.syncSeqs = map[uint64]*held{}
	}
	if prev := w.syncSeqs[h.seq]; prev != nil {
		// The same event twice (a redelivery of one already held).
		prev.reply, prev.touched = h.reply, h.touched
		w.forget(h)
		return
	}
	w.syncBuf = append(w.syncBuf, h)
	w.syncSeqs[h.seq] = h
}

// findHeld finds a held event by its sequence: in the sync buffer or among
// its user's events. Only redeliveries need it.
func (w *worker) findHeld(subject string, seq uint64) *held {
	if h := w.syncSeqs[seq]; h != nil {
		return h
	}
	for _, h := range w.ready {
		if h.seq == seq {
			return h
		}
	}
	key, ok := userKeyOf(subject)
	if !ok {
		return nil
	}
	if u := w.ledger.User(key); u != nil {
		for _, h := range u.Held() {
			if h.seq == seq {
				return h
			}
		}
	}
	return nil
}

// eachHeld calls f for every held event.
func (w *worker) eachHeld(f func(*held)) {
	for _, list := range [][]*held{w.syncBuf, w.ready} {
		for _, h := range list {
			f(h)
		}
	}
	w.ledger.EachHeld(f)
}

// repinned handles a new pin id after an old one: the server unpinned this
// worker at some point (it stopped pulling for longer than PinnedTTL), so
// another dispatcher may have applied events of users it knows. It forgets
// every user without a push in flight (their states are read again), holds
// their events again, and catches up before applying more.
func (w *worker) repinned() {
	w.log.Info().Msg("pinned anew; catching up before applying more events")
	w.env.metrics.takeovers.Inc()
	w.holdUntilCaughtUp()
}

// holdUntilCaughtUp starts a catch-up: it holds the events ready to apply
// and those of every user the ledger can forget (no push in flight, no
// state being written), whose states are read again before more of their
// events are applied, since another dispatcher may have applied some.
// The users it keeps are checked against the stream like the others, and
// their next state write meets the other writer's change (Rebase).
func (w *worker) holdUntilCaughtUp() {
	w.syncStarted = time.Now()
	for _, h := range w.ready {
		w.holdForSync(h)
	}
	w.ready = nil
	for _, h := range w.ledger.Release() {
		w.holdForSync(h)
	}
	w.setSyncing(true)
}

// missedDelivery reports whether a delivery with consumer sequence cseq
// shows that this worker missed one: the consumer counts every delivery,
// so a sequence that does not follow the last one received means a
// delivery went elsewhere (lost with a broken connection or dropped as a
// slow consumer, or sent to another dispatcher during a change of pin).
// Its event is unacknowledged, and applying the user's later events
// before it would make it look applied when it is redelivered; the worker
// must catch up first. Deliveries the last catch-up covered are in order
// by definition.
func (w *worker) missedDelivery(cseq uint64) bool {
	if cseq == 0 || cseq <= w.caughtUpTo {
		return false
	}
	missed := w.lastDelivery != 0 && cseq != w.lastDelivery+1
	w.lastDelivery = cseq
	return missed
}

// resync holds events again until the worker has caught up, after a
// missed delivery. The delivery may have gone to another dispatcher
// during a change of pin, which applied it: like a takeover, the users
// that can be are forgotten and read again, so that checking them against
// the stream compares with the state that dispatcher wrote, not with one
// this worker holds from before (which took the events it applied for
// events the consumer skipped).
func (w *worker) resync() {
	if w.syncing {
		return
	}
	w.log.Warn().Uint64("after_delivery", w.lastDelivery).Msg("a delivery did not arrive; catching up before applying more events")
	w.env.metrics.missedDeliveries.Inc()
	w.lastSyncCheck = time.Time{}
	w.holdUntilCaughtUp()
}

// catchUp ends syncing once this worker holds the partition's pin: it
// reads the consumer's ack floor and last delivered sequence, reads the
// events in between from the stream, merges them with those it holds
// (keeping its own, acknowledgeable, copies), and makes them ready in
// stream order. On an error it leaves syncing on, to be tried again after
// syncCheckInterval.
func (w *worker) catchUp(ctx context.Context) {
	if w.pin == "" || time.Since(w.lastSyncCheck) < syncCheckInterval {
		return
	}
	w.lastSyncCheck = time.Now()
	cctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	ictx, icancel := context.WithTimeout(cctx, catchUpRequestTimeout)
	info, err := w.cons.Info(ictx)
	icancel()
	if err != nil {
		w.log.Warn().Err(err).Msg("reading the consumer's ack floor to catch up; retrying")
		return
	}
	floor, last := info.AckFloor.Stream, info.Delivered.Stream
	w.caughtUpTo = info.Delivered.Consumer
	w.lastDelivery = max(w.lastDelivery, w.caughtUpTo)
	replayed, err := w.readRange(cctx, floor+1, last)
	if err != nil {
		w.log.Warn().Err(err).Uint64("from", floor+1).Uint64("to", last).Msg("reading unacknowledged events to catch up; retrying")
		return
	}
	added := 0
	for _, h := range replayed {
		if w.syncSeqs[h.seq] != nil {
			continue
		}
		w.heldN.Add(1)
		w.syncBuf = append(w.syncBuf, h)
		added++
	}
	sort.Slice(w.syncBuf, func(i, j int) bool { return w.syncBuf[i].seq < w.syncBuf[j].seq })
	w.ready = append(w.syncBuf, w.ready...)
	w.syncBuf, w.syncSeqs = nil, nil
	w.setSyncing(false)
	w.env.metrics.takeoverRead.Add(float64(added))
	w.env.metrics.takeoverTime.Observe(time.Since(w.syncStarted).Seconds())
	w.log.Info().Uint64("ack_floor", floor).Uint64("last_delivered", last).Int("read_from_stream", added).
		Int("events", len(w.ready)).Dur("took", time.Since(w.syncStarted)).Msg("caught up; applying the partition")
}

// readRange reads the partition's events with stream sequences from..to
// (inclusive) straight from the stream, with a short-lived consumer of its
// own (no acks, in memory, deleted afterwards). The events it returns are
// held like delivered ones, but acknowledging them does nothing: if the
// server redelivers one later, the redelivery's handle takes its place
// (findHeld) or, once it is settled, is applied as already seen and
// acknowledged.
//
// A delivery of this read can be lost like any other (a broken
// connection, a slow consumer): its consumer sequence then skips one, or
// a fetch that gets nothing finds the consumer has delivered more than
// arrived. Either is an error, and the caller reads again; going on would
// leave the lost event to be skipped as applied when it is redelivered.
func (w *worker) readRange(ctx context.Context, from, to uint64) ([]*held, error) {
	if from == 0 || to < from {
		return nil, nil
	}
	rctx, cancel := context.WithTimeout(ctx, catchUpRequestTimeout)
	defer cancel()
	cons, err := w.env.js.CreateConsumer(rctx, w.env.stream, jetstream.ConsumerConfig{
		Description:       fmt.Sprintf("pushproxy dispatcher catch-up, partition %d", w.partition),
		FilterSubject:     broker.PartitionFilter(w.partition),
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("creating a consumer from sequence %d: %w", from, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := w.env.js.DeleteConsumer(dctx, w.env.stream, cons.CachedInfo().Name); err != nil {
			w.log.Debug().Err(err).Msg("deleting the catch-up consumer (it expires by itself)")
		}
	}()
	now := time.Now()
	var out []*held
	var received uint64 // deliveries that arrived; the next has consumer sequence received+1
	for {
		want := int(min(to-from+1, catchUpFetch))
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		batch, err := cons.Fetch(want, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("reading the stream from sequence %d: %w", from, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				cancel()
				return nil, fmt.Errorf("reading an event's metadata: %w", err)
			}
			received++
			if md.Sequence.Consumer != received {
				cancel()
				return nil, fmt.Errorf("%w: delivery %d of the read from sequence %d arrived as the %d-th", errCatchUpLost, md.Sequence.Consumer, from, received)
			}
			seq := md.Sequence.Stream
			if seq > to {
				cancel()
				return out, nil
			}
			out = append(out, &held{received: replayed(m), seq: seq, touched: now})
			if seq == to || md.NumPending == 0 {
				cancel()
				return out, nil
			}
			from = seq + 1
		}
		err = batch.Error()
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("reading the stream from sequence %d: %w", from, err)
		}
		if n == 0 {
			// Nothing left in the range, when the rest was removed (age
			// limit); a delivery lost on the way, or one not sent in
			// time, is not that.
			ictx, icancel := context.WithTimeout(ctx, catchUpRequestTimeout)
			info, err := cons.Info(ictx)
			icancel()
			switch {
			case err != nil:
				return nil, fmt.Errorf("reading the stream from sequence %d: %w", from, err)
			case info.Delivered.Consumer > received:
				return nil, fmt.Errorf("%w: %d deliveries of the read from sequence %d sent, %d arrived", errCatchUpLost, info.Delivered.Consumer, from, received)
			case info.NumPending > 0:
				return nil, fmt.Errorf("reading the stream from sequence %d: %d events pending, none came", from, info.NumPending)
			}
			return out, nil
		}
	}
}

// claimPin makes a partition whose pin nobody uses available at once,
// instead of after its PinnedTTL, while this worker has not been pinned:
//
//   - A dead owner's pin: the consumer has events waiting or
//     unacknowledged, no other live dispatcher announces the partition,
//     and the pin is older than this worker (a newer one is probably its
//     own, not yet seen). A dispatcher that is handing the partition over
//     still announces it until its worker has stopped, and then unpins
//     itself.
//   - An abandoned pin: the consumer has events waiting and none
//     unacknowledged, with the same pin, at two claims in a row (a
//     heartbeat apart). Its holder takes nothing while there is work, so
//     it has no pull request waiting, which a live holder always has
//     unless it holds as many events as it may (and then some are
//     unacknowledged). The server gives a pin to a request whose
//     subscription closed before it noticed (see unpin). Nobody holds
//     events of the partition, so releasing it cannot have two
//     dispatchers apply the partition at once, whoever announces it.
func (w *worker) claimPin(ctx context.Context) {
	if w.pin != "" {
		return
	}
	claimed := w.env.claimedByOther(w.partition)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := w.cons.Info(cctx)
	if err != nil {
		w.log.Debug().Err(err).Msg("reading consumer info to claim the pin")
		return
	}
	idle := info.NumPending > 0 && info.NumAckPending == 0
	for _, g := range info.PriorityGroups {
		if g.Group != w.env.cfg.PriorityGroup || g.PinnedClientID == "" {
			continue
		}
		abandoned := idle && g.PinnedClientID == w.idlePin
		w.idlePin = ""
		if idle {
			w.idlePin = g.PinnedClientID
		}
		dead := !claimed && (info.NumPending > 0 || info.NumAckPending > 0) && g.PinnedTS.Before(w.started)
		if !abandoned && !dead {
			continue
		}
		msg := "released the pin of a dispatcher that is gone"
		if !dead {
			msg = "released a pin nobody pulls with"
		}
		if err := w.env.streamHandle.UnpinConsumer(cctx, w.name, g.Group); err != nil {
			w.log.Debug().Err(err).Msg(msg)
			return
		}
		w.idlePin = ""
		w.log.Info().Str("previous_pin", g.PinnedClientID).Int("ack_pending", info.NumAckPending).Uint64("pending", info.NumPending).Msg(msg)
	}
}
