package dispatcher

// Checking a user's state against the stream. A worker trusts the
// consumer to hand it every event of its partition: the takeover's
// catch-up reads what other dispatchers left unacknowledged, and the
// consumer sequence shows a delivery that went elsewhere. Both rest on
// what a server says about the consumer, and a server that was stopped
// can say something old for a moment after it runs again (the
// stream-leader-sigstop chaos scenario saw a later event applied without
// an earlier one). So the first event a worker applies to a user after
// reading the user's state, and again after each catch-up, is checked
// against the stream itself: the stream is asked for the user's first
// event after the one the state ends at (a direct get, which any replica
// may answer). When that is the event about to be applied, nothing lies
// between; when it is an earlier one, the worker reads the events in
// between and applies them first, as copies with nothing to acknowledge,
// like the catch-up's. A replica behind answers soundly too: its copy is
// a prefix of the stream, so if it holds the event about to be applied it
// holds every one before it, and if it holds none of the user's events
// from the state on, it is behind and the check is tried again.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// gapReadLimit bounds the events one check reads for one user. Past it
// the check ends with those, and says so: a partition that waited for
// good would stop every badge of its users, while so many events skipped
// for one user point to a state restored from an old copy rather than to
// the consumer.
const gapReadLimit = 10000

// errStreamBehind is an answer that holds none of a user's events from
// the state on, not even the one the worker holds: a server behind.
var errStreamBehind = errors.New("the stream's answer does not hold the event being applied")

// gapCheck is a user whose next event is checked against the stream: its
// state holds its events up to after, and next is the first event to
// apply past it.
type gapCheck struct {
	user        *user
	subject     string
	after, next uint64
	// missing are the user's events the stream holds between after and
	// next, in order; done says the check has reached next.
	missing []*jetstream.RawStreamMsg
	done    bool
	// confirmed says the user's state was read again from the leader
	// (confirmGaps); appliedElsewhere is where the leader's state ends
	// when it is newer than the one a user holding events keeps: the
	// missing events up to it were applied by another writer, not
	// skipped.
	confirmed        bool
	appliedElsewhere uint64
}

// gapChecks returns a check for each user of hs (in stream order per
// user) not yet checked in the worker's current era, with the first of
// its events past its state. The users are marked checked.
func (w *worker) gapChecks(hs []*held) []*gapCheck {
	var checks []*gapCheck
	for _, h := range hs {
		u := h.user
		after := u.State().LastSeq
		if u.Mark() == w.era || h.seq <= after {
			continue
		}
		u.SetMark(w.era)
		checks = append(checks, &gapCheck{user: u, subject: h.subject, after: after, next: h.seq})
	}
	return checks
}

// checkGaps runs checks until all are done, retrying like a state load;
// false when ctx ends, the worker is asked to stop or the connection is
// closed, with the users' marks cleared.
func (w *worker) checkGaps(ctx context.Context, checks []*gapCheck) bool {
	if len(checks) == 0 || w.untilDone(ctx, "checking users' states against the stream", func(ctx context.Context) error {
		if err := w.readGaps(ctx, checks); err != nil {
			return err
		}
		return w.confirmGaps(ctx, checks)
	}) {
		return true
	}
	for _, c := range checks {
		c.user.SetMark(0)
	}
	return false
}

// readGaps runs the checks not yet done, up to IOConcurrency at once.
func (w *worker) readGaps(ctx context.Context, checks []*gapCheck) error {
	var g errgroup.Group
	g.SetLimit(w.env.cfg.IOConcurrency)
	for _, c := range checks {
		if !c.done {
			g.Go(func() error { return w.readGap(ctx, c) })
		}
	}
	return g.Wait()
}

// readGap reads c's user's events from the stream, from the one
// after its state on, until it meets the event to apply (or a later one:
// the stream's limits removed it), keeping those before in c.missing.
func (w *worker) readGap(ctx context.Context, c *gapCheck) error {
	rctx, cancel := context.WithTimeout(ctx, catchUpRequestTimeout)
	defer cancel()
	from := c.after + 1
	if n := len(c.missing); n > 0 {
		from = c.missing[n-1].Sequence + 1
	}
	for {
		m, err := w.nextEvent(rctx, from, c.subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return w.removedSince(rctx, c)
		}
		if err != nil {
			return fmt.Errorf("reading the user's events from sequence %d: %w", from, err)
		}
		if m.Sequence >= c.next {
			c.done = true
			return nil
		}
		if len(c.missing) == gapReadLimit {
			w.log.Error().Str("user", c.user.Key).Uint64("state_at", c.after).Uint64("next", c.next).Int("read", gapReadLimit).
				Msg("more of the user's events between its state and the next one than a check reads; applying those read, the badge may be off until the next authoritative count")
			c.done = true
			return nil
		}
		c.missing = append(c.missing, m)
		from = m.Sequence + 1
	}
}

// confirmGaps reads again, from the unread bucket's leader, the state of
// each user whose check found events missing, before they are taken for
// events the consumer skipped: the state may be older than the one
// another dispatcher wrote after applying them, when it was read from a
// replica that is behind (a server catching up after it was stopped) or
// kept across a takeover. A newer stored state replaces the one read, and
// the events it holds are no longer missing. A user holding events (kept
// with a push in flight) keeps its state: the missing events are applied
// to it, its next write meets the newer state and is merged with it
// (Rebase), and those the newer state holds do not count as skipped.
func (w *worker) confirmGaps(ctx context.Context, checks []*gapCheck) error {
	for _, c := range checks {
		u := c.user
		if c.confirmed || len(c.missing) == 0 {
			continue
		}
		st, rev, err := w.env.unread.GetFromLeader(ctx, u.Key)
		if err != nil {
			return fmt.Errorf("confirming the state of a user behind the stream: %w", err)
		}
		c.confirmed = true
		if rev == u.Rev() {
			continue
		}
		w.env.metrics.gapStaleStates.Inc()
		w.log.Info().Str("user", u.Key).Uint64("state_at", c.after).Uint64("leader_state_at", st.LastSeq).
			Msg("a user's state older than the one the unread bucket's leader holds; the newer one counts")
		if len(u.Held()) > 0 {
			c.appliedElsewhere = st.LastSeq
			continue
		}
		w.ledger.Load(u, st, rev)
		u.SetMark(w.era)
		c.after = st.LastSeq
		c.missing = slices.DeleteFunc(c.missing, func(m *jetstream.RawStreamMsg) bool { return m.Sequence <= st.LastSeq })
	}
	return nil
}

// nextEvent is the stream's first event on subject from sequence from on.
// It asks with a direct get, which the nearest replica answers; a replica
// that holds none may only be behind (the event a worker holds was
// delivered once the stream's quorum stored it, not once every replica
// did), so "none" is asked again of the stream's leader, which holds
// every event the stream acknowledged. Waiting for the replica to catch
// up instead held the partition's loop 100 ms and more.
func (w *worker) nextEvent(ctx context.Context, from uint64, subject string) (*jetstream.RawStreamMsg, error) {
	m, err := w.env.streamHandle.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return m, err
	}
	w.env.metrics.gapLeaderReads.Inc()
	return broker.LeaderGetMsg(ctx, w.env.js, w.env.stream, broker.MsgQuery{Seq: from, NextBySubj: subject})
}

// removedSince ends a check whose user has no event in the stream from
// the state on: right when the stream's limits removed the event to
// apply, an error (a server behind) when the stream still holds it.
func (w *worker) removedSince(ctx context.Context, c *gapCheck) error {
	info, err := w.env.streamHandle.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading the stream's first sequence: %w", err)
	}
	if info.State.FirstSeq <= c.next {
		return fmt.Errorf("%w: event %d, the stream starts at %d", errStreamBehind, c.next, info.State.FirstSeq)
	}
	c.done = true
	return nil
}

// withMissing returns hs and the events the checks found missing, as held
// copies with nothing to acknowledge, in stream order; false when none
// was.
func (w *worker) withMissing(checks []*gapCheck, hs []*held, now time.Time) ([]*held, bool) {
	found := false
	for _, c := range checks {
		for _, m := range c.missing {
			hs = append(hs, &held{received: received{subject: m.Subject, data: m.Data}, seq: m.Sequence, touched: now, gap: m.Sequence > c.appliedElsewhere})
			w.heldN.Add(1)
			found = true
		}
	}
	if found {
		slices.SortStableFunc(hs, func(a, b *held) int { return cmp.Compare(a.seq, b.seq) })
	}
	return hs, found
}

// gapApplied records an event a check read that changed its user's state
// (an invalid one, terminated when delivered, is found again by every
// check of its user and changes nothing).
func (w *worker) gapApplied(h *held, stateAt uint64) {
	w.env.metrics.gapEvents.Inc()
	w.log.Warn().Str("user", h.user.Key).Uint64("seq", h.seq).Uint64("state_at", stateAt).
		Msg("the partition's consumer skipped an event of the user; applied it from the stream before the later ones")
}
