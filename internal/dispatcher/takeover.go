package dispatcher

// The takeover barrier: a worker that has just become a partition's
// consumer holds what it receives until every event another dispatcher left
// unacknowledged has been redelivered to it (see DESIGN.md).

import (
	"context"
	"sort"
	"time"
)

// setSyncing records whether the worker holds events for the barrier, for
// the worker itself and, atomically, for the fetch loop.
func (w *worker) setSyncing(v bool) {
	w.syncing = v
	w.syncFlag.Store(v)
}

// holdForSync keeps an event until the partition is in sync.
func (w *worker) holdForSync(h *held) {
	if w.syncSeqs == nil {
		w.syncSeqs = map[uint64]*held{}
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
	if !ok || w.users[key] == nil {
		return nil
	}
	rec := w.users[key]
	for _, list := range [][]*held{rec.pending, rec.inflight} {
		for _, h := range list {
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
	for _, rec := range w.users {
		for _, list := range [][]*held{rec.pending, rec.inflight} {
			for _, h := range list {
				f(h)
			}
		}
	}
}

// repinned handles a new pin id after an old one: the server unpinned this
// worker at some point (it stopped pulling for longer than PinnedTTL), so
// another dispatcher may have applied events of users it has nothing held
// for. Forget those and sync again.
func (w *worker) repinned() {
	w.log.Info().Msg("pinned anew; syncing before applying more events")
	w.d.metrics.takeovers.Inc()
	for _, h := range w.ready {
		w.holdForSync(h)
	}
	w.ready = nil
	w.setSyncing(true)
	for key, r := range w.users {
		if r.idle() {
			if _, busy := w.co.Inspect(key); !busy {
				delete(w.users, key)
			}
		}
	}
}

// checkSync ends syncing once every unacknowledged event of the partition
// is one this worker holds: events another dispatcher left unacknowledged
// (it died, or handed over without settling) have been redelivered here by
// then, so sorting the held events by stream sequence restores the order.
func (w *worker) checkSync(ctx context.Context) {
	caughtUp := w.syncWant > 0 && w.heldN.Load() >= w.syncWant
	if !caughtUp && time.Since(w.lastSyncCheck) < syncCheckInterval {
		return
	}
	w.lastSyncCheck = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := w.cons.Info(cctx)
	cancel()
	if err != nil {
		w.log.Debug().Err(err).Msg("reading consumer info while syncing")
		return
	}
	if int64(info.NumAckPending) > w.heldN.Load() {
		w.syncWant = int64(info.NumAckPending)
		return
	}
	w.syncWant = 0
	sort.Slice(w.syncBuf, func(i, j int) bool { return w.syncBuf[i].seq < w.syncBuf[j].seq })
	w.ready = append(w.syncBuf, w.ready...)
	w.syncBuf, w.syncSeqs = nil, nil
	w.setSyncing(false)
	w.log.Debug().Int("events", len(w.ready)).Msg("partition in sync")
}
