package relay

import (
	"context"
	"sync/atomic"
	"time"
)

// Stall guard defaults: the guard ticks every stallTick; a tick later than
// stallGap after the one before means the process did not run meanwhile
// (its host stopped it, or it was starved of CPU), and requests are then
// refused for stallGrace.
const (
	stallTick  = 100 * time.Millisecond
	stallGap   = time.Second
	stallGrace = 2 * time.Second
	// pausedBackOff is the back-off asked of what a pause held back.
	pausedBackOff = time.Second
)

// stallGuard notices that the relay did not run for a while. Requests
// that reached it meanwhile waited in its sockets; their senders may have
// given up on them and sent newer counts since, and on waking the relay
// would forward them all at once, in any order: a device could get an
// older count after a newer one. The relay refuses the requests it reads
// while it has not ticked for longer than stallGap, and for stallGrace
// after such a gap, with a 503 the dispatcher retries with its current
// count. A request read before a gap and not yet sent to its push
// service is held back likewise (pausedSince): its sender may have given
// up on it during the gap. Time is measured on the monotonic clock from
// origin, which runs on while the process is stopped.
type stallGuard struct {
	origin time.Time
	// last is the time of the last tick (since origin), 0 while the guard
	// does not watch; until, the end of the refusals after a gap.
	last, until atomic.Int64
	// gaps counts the gaps noticed.
	gaps atomic.Int64
}

func newStallGuard() *stallGuard { return &stallGuard{origin: time.Now()} }

// watch ticks until ctx ends, and calls onGap with the length of each gap.
func (g *stallGuard) watch(ctx context.Context, onGap func(gap time.Duration)) {
	t := time.NewTicker(stallTick)
	defer t.Stop()
	g.last.Store(int64(time.Since(g.origin)))
	defer g.last.Store(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := int64(time.Since(g.origin))
			if gap := now - g.last.Load(); gap > int64(stallGap) {
				g.until.Store(now + int64(stallGrace))
				g.gaps.Add(1)
				onGap(time.Duration(gap))
			}
			g.last.Store(now)
		}
	}
}

// stalled reports whether a request read now may have waited through a
// stall of the relay.
func (g *stallGuard) stalled() bool {
	last := g.last.Load()
	if last == 0 {
		return false
	}
	now := int64(time.Since(g.origin))
	return now-last > int64(stallGap) || now < g.until.Load()
}

// mark is what pausedSince compares with: taken when a request is read.
func (g *stallGuard) mark() int64 { return g.gaps.Load() }

// pausedSince reports whether the relay may have paused since mark was
// taken: a send of the request read then must not go out, as newer counts
// may have been sent since by another replica. It is asked just before a
// send, and it tells a pause at once, before the guard's next tick notices
// it.
func (g *stallGuard) pausedSince(mark int64) bool {
	return g.stalled() || g.gaps.Load() != mark
}
