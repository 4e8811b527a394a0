// Package badges is what happens to one user's events in a dispatcher: a
// pure state machine over the users of a partition. For each user it
// keeps the unread state, the events applied and not yet settled, the push
// in flight and its retry budget, and with a coalescer it decides what to
// send now. It does no I/O and reads no clock: the partition loop
// (internal/dispatcher) passes the time, reads and writes the stores,
// talks to the relay, and acknowledges the events the ledger settles.
//
// One user's event goes this way:
//
//  1. Apply folds it into the user's state (unread.Apply; an event the
//     state already holds changes nothing) and tells the coalescer the new
//     count. The event is held, pending.
//  2. Due (or Flush, when handing the partition over) returns the users
//     whose count is due, with their pending events. The loop settles a
//     skip (Unchanged: the devices show the count already), drops a push
//     that cannot go (NotSent: proxy disabled, no devices), holds one
//     whose apps are all paused (Paused), or sends it (Send): the events
//     are then in flight.
//  3. The relay's answer ends the push: Disabled, Retry (the push waits
//     and goes again, merged with newer changes; all but the user's
//     latest event are settled, so an outage holds one event per user),
//     Dead (dead-lettered) or Answered (delivered, or retried per device
//     within MaxPushRetries, or held for app faults).
//  4. The loop writes what a Settle records (the state first, from a
//     Snapshot), then acknowledges its events and reports back with
//     Settled. A failed write puts the events back; the coalescer comes
//     back to the user. The writes go on while the loop applies and
//     pushes more: a Settle's events stay held (Held, EachHeld) until
//     Settled, and a write that lands records the revision without
//     hiding changes made since its Snapshot (Stored).
//
// The state is written before its events are acknowledged, so a
// dispatcher killed at any point leaves either the events (redelivered to
// the next owner, which applies those the stored state does not hold) or
// a state that holds them. The loop writes one state of a user at a time,
// so revisions follow one another.
package badges

import (
	"slices"
	"sort"
	"time"

	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// Event is what the ledger needs of an event it holds: the caller's
// handle (its JetStream message), comparable, with the event's stream
// sequence and when it was received or occurred (zero: unknown).
type Event interface {
	comparable
	Seq() uint64
	Time() time.Time
}

// Reasons a Settle gives for events that end without a push.
const (
	SkipUnchanged       = "unchanged"        // the devices show the count already
	SkipProxyDisabled   = "proxy_disabled"   // the push notification proxy is disabled
	SkipNoSubscriptions = "no_subscriptions" // the user has no device
	SkipAppPaused       = "app_paused"       // older events of a push held for paused apps
	SkipHeld            = "held"             // older events of a push held for the relay or for its devices
)

// Requeue reasons besides those of Retry: what a push waits for.
const (
	RequeueAppPaused     = "app_paused"     // every app of the user is paused, or no device got it for app faults
	RequeueDeviceBackOff = "device_backoff" // the relay asked to wait
	RequeueDeviceRetry   = "device_retry"   // devices asked for a retry
)

// Retry reasons the ledger treats apart.
const (
	// RetryShutdown: the dispatcher is stopping; every event stays
	// unacknowledged for the next owner.
	RetryShutdown = "shutdown"
	// RetryRelayUnavailable: the relay client's breaker is open; the
	// push goes no later than MaxRetryDelay and RelayCooldown.
	RetryRelayUnavailable = "relay_unavailable"
	// RetryRelayBackPressure: the relay refused the request as a whole
	// for now (429: the organization is over its quota there); the
	// back-off it asked for is the wait.
	RetryRelayBackPressure = "relay_backpressure"
)

// Policy is how the ledger applies events and paces retries. Zero
// durations are not defaulted: the dispatcher's Config gives them.
type Policy struct {
	// Unread is how events change a state.
	Unread unread.Options
	// Coalesce is the coalescer's timers.
	Coalesce coalesce.Config
	// RetryDelay is the first retry's delay, doubled per retry up to
	// MaxRetryDelay.
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// RelayCooldown caps the delay of a push held for a down relay: the
	// relay client's breaker tries the relay that often.
	RelayCooldown time.Duration
	// MaxPushRetries is how often a push is sent again for devices that
	// ask for a retry before it is dead-lettered.
	MaxPushRetries int
}

// Push is a user's push: the count, the highest event sequence it covers,
// and what the devices showed before.
type Push struct {
	Count int
	Seq   uint64
	// Previous is the count last pushed (nil: never or unknown).
	Previous *int
	// Exact says the count is authoritative.
	Exact bool
}

// User is what the ledger knows of one user. Key, Tenant and Name never
// change; the rest is read through methods and changed by the Ledger.
type User[E Event] struct {
	// Key is the user's key in the stores; Tenant and Name (the address)
	// are as events spell them.
	Key, Tenant, Name string

	loaded bool
	state  unread.State
	rev    uint64
	dirty  bool
	// gen counts the changes of state, so that a write of an older
	// Snapshot does not mark newer changes as stored.
	gen uint64
	// mark is the caller's (see Mark); 0 after each Load.
	mark uint64

	// pending are applied events not yet covered by a push; inflight are
	// those the push in flight covers.
	pending, inflight []E
	push              *Push
	// settling are the events of the Settles given out and not yet
	// reported with Settled (being written, not yet acknowledged);
	// settles counts those Settles.
	settling []E
	settles  int
	// requeues counts retries of the current push after device retries
	// or relay trouble; deviceRetries those for devices; attempts its
	// relay requests.
	deviceRetries, requeues, attempts int
	lastActive                        time.Time
}

// Loaded reports whether the user's stored state was read.
func (u *User[E]) Loaded() bool { return u.loaded }

// State is the user's unread state, with every applied event.
func (u *User[E]) State() unread.State { return u.state }

// Mark is what the caller last set with SetMark since the state was
// loaded; 0 when nothing was. The dispatcher marks a user whose state it
// has checked against the stream.
func (u *User[E]) Mark() uint64 { return u.mark }

// SetMark sets the caller's mark, which the next Load clears.
func (u *User[E]) SetMark(m uint64) { u.mark = m }

// Rev is the stored revision the state was read or written at.
func (u *User[E]) Rev() uint64 { return u.rev }

// Dirty reports whether the state has changes not yet written.
func (u *User[E]) Dirty() bool { return u.dirty }

// InFlight reports whether a push of the user is at the relay.
func (u *User[E]) InFlight() bool { return u.push != nil }

// Pushing returns the user's push in flight and the events it covers;
// false when none is.
func (u *User[E]) Pushing() (Push, []E, bool) {
	if u.push == nil {
		return Push{}, nil, false
	}
	return *u.push, u.inflight, true
}

// Held returns the user's events not yet settled: those in flight, those
// of Settles being written, then those pending.
func (u *User[E]) Held() []E {
	return append(append(slices.Clip(u.inflight), u.settling...), u.pending...)
}

// Settling reports whether a Settle of the user is given out and not yet
// reported with Settled.
func (u *User[E]) Settling() bool { return u.settles > 0 }

// idle: nothing held, nothing in flight, nothing being written.
func (u *User[E]) idle() bool {
	return len(u.pending) == 0 && len(u.inflight) == 0 && u.push == nil && u.settles == 0
}

// Ledger is the state machine of one partition's users. It is not safe
// for concurrent use: the loop calls it, and its writers work from
// Snapshots.
type Ledger[E Event] struct {
	policy Policy
	co     *coalesce.Coalescer
	users  map[string]*User[E]
}

// New returns an empty ledger.
func New[E Event](p Policy) *Ledger[E] {
	return &Ledger[E]{policy: p, co: coalesce.New(p.Coalesce), users: map[string]*User[E]{}}
}

// User returns the user of key, or nil when the ledger does not hold it.
func (l *Ledger[E]) User(key string) *User[E] { return l.users[key] }

// Add returns the user of key, adding it (not loaded) when new.
func (l *Ledger[E]) Add(key, tenant, name string) *User[E] {
	u := l.users[key]
	if u == nil {
		u = &User[E]{Key: key, Tenant: tenant, Name: name}
		l.users[key] = u
	}
	return u
}

// Load gives a user its stored state and revision (0: none stored).
func (l *Ledger[E]) Load(u *User[E], st unread.State, rev uint64) {
	u.state, u.rev, u.loaded, u.mark = st, rev, true, 0
}

// Apply folds e, held as ev, into its loaded user's state and tells the
// coalescer. It reports whether the state changed (false: the state
// holds the event already). The event is held either way, until a push
// or a skip settles it. New mail's window counts from when ingest
// received the event (coalesce.Update.Waited), not from now.
func (l *Ledger[E]) Apply(now time.Time, u *User[E], e *events.Event, ev E) bool {
	prev := u.state.Count
	st, applied := unread.Apply(u.state, e, ev.Seq(), l.policy.Unread)
	if applied {
		u.changed(st)
	}
	u.pending = append(u.pending, ev)
	u.lastActive = now
	var waited time.Duration
	if !e.ReceivedAt.IsZero() {
		waited = now.Sub(e.ReceivedAt)
	}
	l.co.Observe(now, u.Key, coalesce.Update{Count: u.state.Count, Seq: ev.Seq(), Change: coalesce.ChangeOf(prev, u.state.Count), Pushed: u.state.LastPushedCount, Waited: waited})
	return applied
}

// Due is a user whose count is due, with the events it covers (taken from
// the user's pending ones): push Push.Count, or, with Skip, settle the
// events without a push.
type Due[E Event] struct {
	User   *User[E]
	Push   Push
	Skip   bool
	Events []E
}

// Due returns the users whose count is due at now.
func (l *Ledger[E]) Due(now time.Time) []Due[E] { return l.take(l.co.Due(now)) }

// Flush returns every user with a count waiting, due or not (handing the
// partition over).
func (l *Ledger[E]) Flush(now time.Time) []Due[E] { return l.take(l.co.Flush(now)) }

// NextDeadline is when the next count is due.
func (l *Ledger[E]) NextDeadline() (time.Time, bool) { return l.co.NextDeadline() }

func (l *Ledger[E]) take(pushes []coalesce.Push) []Due[E] {
	out := make([]Due[E], 0, len(pushes))
	for _, p := range pushes {
		u := l.users[p.Key]
		if u == nil {
			l.co.Forget(p.Key)
			continue
		}
		d := Due[E]{User: u, Skip: p.Skip, Events: u.pending,
			Push: Push{Count: p.Count, Seq: p.Seq, Previous: u.state.LastPushedCount, Exact: u.state.Exact}}
		u.pending = nil
		out = append(out, d)
	}
	return out
}

// Settle is what ends a user's events: write the state (when dirty) and
// the records, then acknowledge Events and call Settled.
type Settle[E Event] struct {
	User   *User[E]
	Events []E
	// Skip says why the events end without a push (Skip* constants);
	// empty for a push that was sent or dead-lettered.
	Skip string
	// Dead is the dead-letter reason of a push that failed for good.
	Dead string
	// Sent is set for a push delivered.
	Sent bool
	// Push is the push (Sent or Dead), Attempts its relay requests.
	Push     Push
	Attempts int
	// Merged is set by Rebase: the state was merged with another
	// writer's.
	Merged bool
}

// Unchanged settles a skip: the devices show the count already.
func (l *Ledger[E]) Unchanged(d Due[E]) *Settle[E] {
	return give(&Settle[E]{User: d.User, Events: d.Events, Skip: SkipUnchanged})
}

// NotSent settles a push that cannot go (SkipProxyDisabled,
// SkipNoSubscriptions); the coalescer drops it.
func (l *Ledger[E]) NotSent(now time.Time, d Due[E], reason string) *Settle[E] {
	l.co.Failed(now, d.User.Key, time.Time{})
	return give(&Settle[E]{User: d.User, Events: d.Events, Skip: reason})
}

// Paused holds a push whose apps are all paused after app faults, until
// a trial may go (until, and no sooner than RetryDelay). It does not use
// the retry budget. The returned Settle (nil when there are fewer than
// two events) ends all but the latest event; see keepLatest.
func (l *Ledger[E]) Paused(now time.Time, d Due[E], until time.Time) *Settle[E] {
	return l.wait(now, d, until, SkipAppPaused)
}

// Held holds a push the loop cannot send yet (the user's devices could
// not be read), until, as Paused does; the events it ends are skipped as
// SkipHeld.
func (l *Ledger[E]) Held(now time.Time, d Due[E], until time.Time) *Settle[E] {
	return l.wait(now, d, until, SkipHeld)
}

// wait holds d's push until, ending all but its latest event for reason.
func (l *Ledger[E]) wait(now time.Time, d Due[E], until time.Time, reason string) *Settle[E] {
	s, rest := keepLatest(d.User, d.Events, reason)
	l.hold(now, d.User, rest, until)
	return s
}

// Send puts a due push in flight.
func (l *Ledger[E]) Send(d Due[E]) {
	d.User.inflight = d.Events
	p := d.Push
	d.User.push = &p
}

// Result is what an answer to a push asks of the loop: a Settle to write
// and acknowledge, and, when the push waits to go again, why.
type Result[E Event] struct {
	Settle   *Settle[E]
	Requeued string
}

// answer ends the user's push in flight and returns its push and events;
// false when the user has none.
func (l *Ledger[E]) answer(u *User[E], attempts int) (Push, []E, bool) {
	if u == nil || u.push == nil {
		return Push{}, nil, false
	}
	p, evs := *u.push, u.inflight
	u.push, u.inflight = nil, nil
	u.attempts += attempts
	return p, evs, true
}

// Disabled ends a push the proxy's disabling stopped before it was sent.
func (l *Ledger[E]) Disabled(now time.Time, u *User[E], attempts int) Result[E] {
	_, evs, ok := l.answer(u, attempts)
	if !ok {
		return Result[E]{}
	}
	l.co.Failed(now, u.Key, time.Time{})
	return Result[E]{Settle: give(&Settle[E]{User: u, Events: evs, Skip: SkipProxyDisabled})}
}

// Retry puts a push back that did not reach the devices (reason: relay
// unavailable or pushing back, token refused, shutdown), to go after a
// back-off no shorter than hint. Except at shutdown, all but the user's
// latest event are settled.
func (l *Ledger[E]) Retry(now time.Time, u *User[E], attempts int, reason string, hint time.Duration) Result[E] {
	_, evs, ok := l.answer(u, attempts)
	if !ok {
		return Result[E]{}
	}
	if reason == RetryRelayUnavailable {
		// The relay client's own breaker: its next trial is no later than
		// MaxRetryDelay away, so that a changed relay Uri (which resets
		// it) reaches the push soon.
		hint = min(hint, l.policy.MaxRetryDelay)
	}
	var s *Settle[E]
	if reason != RetryShutdown {
		s, evs = keepLatest(u, evs, SkipHeld)
	}
	l.requeue(now, u, evs, reason, hint)
	return Result[E]{Settle: s, Requeued: reason}
}

// Dead ends a push the relay refused for good or whose retries ran out
// while the relay was up: its events are dead-lettered (reason).
func (l *Ledger[E]) Dead(now time.Time, u *User[E], attempts int, reason string) Result[E] {
	p, evs, ok := l.answer(u, attempts)
	if !ok {
		return Result[E]{}
	}
	return Result[E]{Settle: l.dead(now, u, p, evs, reason)}
}

func (l *Ledger[E]) dead(now time.Time, u *User[E], p Push, evs []E, reason string) *Settle[E] {
	l.co.Failed(now, u.Key, time.Time{})
	s := give(&Settle[E]{User: u, Events: evs, Dead: reason, Push: p, Attempts: u.attempts})
	u.deviceRetries, u.requeues, u.attempts = 0, 0, 0
	return s
}

// Answer is the relay's per-device answer to a push it accepted, as the
// loop classified it (delivery.Classify).
type Answer struct {
	// Delivered counts the devices that got the count.
	Delivered int
	// Transient says some devices asked for a retry; Missing that the
	// answer lacked some notifications.
	Transient, Missing bool
	// BackOff is the wait the relay asked for (0: none).
	BackOff time.Duration
	// AppFaults says some devices' apps could not send.
	AppFaults bool
}

// Answered ends a push the relay accepted. Devices that ask for a retry
// send it again, within MaxPushRetries (a back-off the relay asked for
// does not count), and it is dead-lettered after that
// (pushlog.ReasonDeviceRetries, or ReasonMissingResponse when answers
// were missing). No device reached for app faults only: the push is
// held, and the breaker paces the next try. Otherwise it was delivered:
// the state records the count pushed.
func (l *Ledger[E]) Answered(now time.Time, u *User[E], attempts int, a Answer) Result[E] {
	p, evs, ok := l.answer(u, attempts)
	if !ok {
		return Result[E]{}
	}
	if a.Transient || a.Missing {
		if a.BackOff > 0 && !a.Missing {
			l.requeue(now, u, evs, RequeueDeviceBackOff, a.BackOff)
			return Result[E]{Requeued: RequeueDeviceBackOff}
		}
		u.deviceRetries++
		if u.deviceRetries <= l.policy.MaxPushRetries {
			l.requeue(now, u, evs, RequeueDeviceRetry, 0)
			return Result[E]{Requeued: RequeueDeviceRetry}
		}
		reason := pushlog.ReasonDeviceRetries
		if a.Missing {
			reason = pushlog.ReasonMissingResponse
		}
		return Result[E]{Settle: l.dead(now, u, p, evs, reason)}
	}
	if a.Delivered == 0 && a.AppFaults {
		l.hold(now, u, evs, now.Add(l.policy.RetryDelay))
		return Result[E]{Requeued: RequeueAppPaused}
	}
	u.changed(u.state.Pushed(p.Count, p.Seq, now))
	l.co.Delivered(now, u.Key, p.Count)
	s := give(&Settle[E]{User: u, Events: evs, Sent: true, Push: p, Attempts: u.attempts})
	u.deviceRetries, u.requeues, u.attempts = 0, 0, 0
	return Result[E]{Settle: s}
}

// keepLatest splits a held-back push's events: all but the user's latest
// are settled at once by the returned Settle (the state, written before
// they are acknowledged, has them all), and the latest stays
// unacknowledged, which is enough for a new owner to push the count after
// a crash. So a relay outage or an app fault holds one event per user,
// not a backlog that grows with the outage and stops the partition for
// everyone, and when the relay is back each user's one push carries the
// latest count. The Settle is nil when there is one event or none.
func keepLatest[E Event](u *User[E], evs []E, reason string) (*Settle[E], []E) {
	n := len(evs)
	if n < 2 {
		return nil, evs
	}
	// Clipped, so that putting the settled events back never writes over
	// the kept one.
	return give(&Settle[E]{User: u, Events: evs[: n-1 : n-1], Skip: reason}), evs[n-1:]
}

// hold puts a push back until a paused tenant+app lets a trial through;
// it does not count as a retry.
func (l *Ledger[E]) hold(now time.Time, u *User[E], evs []E, until time.Time) {
	if first := now.Add(l.policy.RetryDelay); until.Before(first) {
		until = first
	}
	l.co.Failed(now, u.Key, until)
	u.pending = append(evs, u.pending...)
}

// requeue puts a push back to go after a back-off: RetryDelay doubled per
// requeue up to MaxRetryDelay (RelayCooldown for a down relay), and no
// shorter than hint; the back-off the relay asked for a device, when it
// did (RequeueDeviceBackOff), no shorter than RetryDelay.
func (l *Ledger[E]) requeue(now time.Time, u *User[E], evs []E, reason string, hint time.Duration) {
	u.requeues++
	delay := l.policy.RetryDelay << min(u.requeues-1, 20)
	delay = min(max(delay, l.policy.RetryDelay), l.policy.MaxRetryDelay)
	switch reason {
	case RetryRelayUnavailable:
		// The relay client's breaker tries the relay every cool-down; a
		// push held for a down relay tries as often, so that it goes out
		// within a cool-down of the relay's return, not a growing back-off.
		delay = min(delay, l.policy.RelayCooldown)
	case RequeueDeviceBackOff, RetryRelayBackPressure:
		// The relay said when to come back: it sees the push service's
		// answers to every dispatcher, and its back-off grows with the
		// service's outage (internal/relay, "Outages"); it sees the
		// organization's requests from every dispatcher at its quota, and
		// its back-off is when the quota has room for the request again.
		// Doubling on top held a badge up to 16 s after a 20 s outage had
		// ended, and after a flood over the quota.
		delay = l.policy.RetryDelay
	}
	delay = max(delay, hint)
	l.co.Failed(now, u.Key, now.Add(delay))
	u.pending = append(evs, u.pending...)
}

// give hands s out: its events stay the user's, held, until Settled.
func give[E Event](s *Settle[E]) *Settle[E] {
	u := s.User
	u.settling = append(u.settling, s.Events...)
	u.settles++
	return s
}

// changed sets the user's state to st, to be written.
func (u *User[E]) changed(st unread.State) {
	u.state, u.dirty = st, true
	u.gen++
}

// Write is a user's state to write, copied on the loop: the state, and the
// stored revision it replaces (0: none stored).
type Write struct {
	State unread.State
	Rev   uint64
	gen   uint64
}

// Snapshot returns the user's state to write, while the loop may go on
// changing the user.
func (l *Ledger[E]) Snapshot(u *User[E]) Write {
	return Write{State: u.state, Rev: u.rev, gen: u.gen}
}

// Stored records that w, a Snapshot of the user, was written at rev. The
// user stays dirty when its state changed after the Snapshot.
func (l *Ledger[E]) Stored(u *User[E], w Write, rev uint64) {
	u.rev = rev
	if u.gen == w.gen {
		u.dirty = false
	}
}

// Rebase merges the user's state with cur, stored at rev by another
// writer (a dispatcher that lost the partition, an operator): every
// event the user holds (s's, those of other Settles not yet Settled, and
// those in flight or pending), decoded again by decode, is applied on cur
// in stream order, and the newer push record is kept. The loop then
// writes the merged state, from a new Snapshot.
func (l *Ledger[E]) Rebase(s *Settle[E], cur unread.State, rev uint64, decode func(E) (events.Event, error)) {
	u := s.User
	all := u.Held()
	sort.Slice(all, func(i, j int) bool { return all[i].Seq() < all[j].Seq() })
	merged := cur
	for _, ev := range all {
		// Held events were valid when they were applied.
		if e, err := decode(ev); err == nil {
			merged, _ = unread.Apply(merged, &e, ev.Seq(), l.policy.Unread)
		}
	}
	if u.state.LastPushedAt.After(merged.LastPushedAt) {
		merged.LastPushedCount, merged.LastPushedAt, merged.LastPushedSeq = u.state.LastPushedCount, u.state.LastPushedAt, u.state.LastPushedSeq
	}
	u.changed(merged)
	u.rev, s.Merged = rev, true
}

// Settled reports that s was written (ok: its events are then
// acknowledged) or not (its events are held again and the user's count
// comes due again). A merged state that still needs a push comes due too.
func (l *Ledger[E]) Settled(now time.Time, s *Settle[E], ok bool) {
	u := s.User
	u.settles--
	u.settling = slices.DeleteFunc(u.settling, func(ev E) bool { return slices.Contains(s.Events, ev) })
	if !ok {
		u.pending = append(s.Events, u.pending...)
		if len(u.pending) > 0 || u.state.NeedsPush() {
			l.observeAgain(now, u)
		}
		return
	}
	if s.Merged && u.push == nil && len(u.pending) == 0 && u.state.NeedsPush() {
		l.observeAgain(now, u)
	}
}

// observeAgain makes the user's count due again, as a decrease (soon).
func (l *Ledger[E]) observeAgain(now time.Time, u *User[E]) {
	l.co.Observe(now, u.Key, coalesce.Update{Count: u.state.Count, Change: coalesce.Decrease, Pushed: u.state.LastPushedCount})
}

// EachHeld calls f for every event the ledger holds.
func (l *Ledger[E]) EachHeld(f func(ev E)) {
	for _, u := range l.users {
		for _, list := range [][]E{u.inflight, u.settling, u.pending} {
			for _, ev := range list {
				f(ev)
			}
		}
	}
}

// InFlight counts the users with a push at the relay.
func (l *Ledger[E]) InFlight() int {
	n := 0
	for _, u := range l.users {
		if u.push != nil {
			n++
		}
	}
	return n
}

// Len is how many users the ledger holds.
func (l *Ledger[E]) Len() int { return len(l.users) }

// Sweep forgets idle users: nothing held, nothing waiting in the
// coalescer, and no event since cutoff (any time when full).
func (l *Ledger[E]) Sweep(cutoff time.Time, full bool) {
	for key, u := range l.users {
		if !u.idle() || (!full && u.lastActive.After(cutoff)) {
			continue
		}
		if _, busy := l.co.Inspect(key); busy {
			continue
		}
		delete(l.users, key)
	}
}

// Release forgets every user without a push in flight or a Settle being
// written, and returns their pending events, for a loop that lost the
// partition for a while (another owner may have applied events of these
// users): their states are read again before they are applied.
func (l *Ledger[E]) Release() []E {
	var out []E
	for key, u := range l.users {
		if u.push != nil || u.settles > 0 {
			continue
		}
		out = append(out, u.pending...)
		u.pending = nil
		l.co.Forget(key)
		delete(l.users, key)
	}
	return out
}
