// Package coalesce decides when a user's unread count is pushed, the way
// Alertmanager's dispatcher groups alerts: each user has a timer, a burst of
// changes becomes one push carrying the final count, and no user waits
// longer than a bound.
//
// The rules, for one user (a key):
//
//   - An increase (new mail) is pushed Window after it reached the pipeline
//     (Update.Waited says how long before it was observed that was), so
//     that time spent in queues is not added to the window; but it waits
//     at least MinHold (a quarter of Window) once observed, and a change
//     observed more than a Window late (a backlog) waits the whole Window
//     once observed (Config.Hold). Later increases do not push that
//     deadline back, so a steady stream of new mail still goes out every
//     Window.
//   - A decrease (read, deleted) is debounced: it is pushed Debounce after
//     the last change, unless an increase already set an earlier deadline.
//   - Nothing waits longer than MaxDelay after the first change that is not
//     pushed yet.
//   - When the deadline comes and the count equals the last count pushed,
//     nothing is sent: the push is a Skip.
//   - At most one push per key is in flight. Changes observed meanwhile wait
//     for it to end (Delivered or Failed) and then follow the same rules, so
//     a key has at most one pending push and one in flight, and pushes of
//     one key never overtake each other.
//
// A Coalescer is pure: no goroutines, no clock, no I/O. The caller passes
// the time to every method, asks NextDeadline when to come back and calls
// Due then. That makes it usable from the dispatcher's event loop and from
// replay, which feeds it recorded events to show the pushes they would give
// (see Simulate). A Coalescer is not safe for concurrent use.
package coalesce

import (
	"container/heap"
	"errors"
	"fmt"
	"time"
)

// Defaults of Config.
const (
	DefaultWindow   = 300 * time.Millisecond
	DefaultDebounce = 2 * time.Second
	DefaultMaxDelay = 10 * time.Second
)

// Config holds the timers. Zero fields take the defaults.
type Config struct {
	// Window is how long new mail may wait for more changes to join it.
	Window time.Duration
	// Debounce is how long after the last decrease a push waits.
	Debounce time.Duration
	// MaxDelay bounds the wait after the first change not pushed yet.
	MaxDelay time.Duration
}

// WithDefaults returns c with zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = DefaultMaxDelay
	}
	return c
}

// MinHold is the shortest an increase waits once observed: a quarter of
// Window. See Hold.
func (c Config) MinHold() time.Duration { return c.WithDefaults().Window / 4 }

// Hold is how long an increase observed after it waited for waited may
// still wait for more changes to join it.
//
// Within a window (waited at most Window: the pipeline keeps up), it is
// what is left of the window counted from when the change reached the
// pipeline, and at least MinHold: time spent in queues before the
// dispatcher saw the change is not added to its push's latency, as long
// as it is under three quarters of the window.
//
// Later than that (a backlog, a takeover), the push is late already and
// the change waits the whole Window once observed, as one observed at
// once does: the dispatcher is catching up, reading many changes of the
// same users in a short time, and gathering them into as few pushes as
// possible is what drains the backlog soonest.
func (c Config) Hold(waited time.Duration) time.Duration {
	c = c.WithDefaults()
	if waited > c.Window {
		return c.Window
	}
	return max(c.Window-max(waited, 0), c.MinHold())
}

// ErrInvalidConfig is wrapped by Config.Validate's errors.
var ErrInvalidConfig = errors.New("invalid coalescing configuration")

// Validate reports negative durations and a MaxDelay shorter than Window.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Window < 0 || c.Debounce < 0 || c.MaxDelay < 0:
		return fmt.Errorf("%w: durations must not be negative", ErrInvalidConfig)
	case c.MaxDelay < c.Window:
		return fmt.Errorf("%w: max delay %s is shorter than the window %s", ErrInvalidConfig, c.MaxDelay, c.Window)
	}
	return nil
}

// Change says which way a count moved, which decides how long it may wait.
type Change int

const (
	// Decrease is a count that went down or stayed: it may wait Debounce.
	Decrease Change = iota
	// Increase is new mail: it waits at most Window.
	Increase
)

// String is "decrease" or "increase".
func (c Change) String() string {
	if c == Increase {
		return "increase"
	}
	return "decrease"
}

// ChangeOf is Increase when to is above from, Decrease otherwise.
func ChangeOf(from, to int) Change {
	if to > from {
		return Increase
	}
	return Decrease
}

// Update is one observed change of a key's count.
type Update struct {
	// Count is the count after the change.
	Count int
	// Seq identifies the change (the stream sequence of its event); a push
	// carries the highest Seq it covers.
	Seq uint64
	// Change says how urgent the change is.
	Change Change
	// Pushed is the count last pushed to the key before, as far as the
	// caller knows (nil: never or unknown). It is used only when the
	// Coalescer has no record of the key; its own record is fresher.
	Pushed *int
	// Waited is how long the change waited before it was observed: from
	// when it reached the pipeline to the observation (0: unknown). An
	// increase's window is counted from then (see Config.Hold). A negative
	// value (clocks that disagree) counts as 0.
	Waited time.Duration
}

// Push is a decision of Due: send Count to the key's devices, or (Skip) do
// nothing because they already show it.
type Push struct {
	Key string
	// Count is the count to push: the latest observed.
	Count int
	// Seq is the highest Update.Seq the push covers.
	Seq uint64
	// Changes is how many updates the push covers (for a coalescing ratio).
	Changes int
	// First is when the first covered update was observed.
	First time.Time
	// Deadline is when the push became due.
	Deadline time.Time
	// Skip is true when Count equals the last count pushed: nothing needs
	// sending, and the covered changes are settled. A Skip is not in flight.
	Skip bool
	// Retry counts how many times this push failed and was retried.
	Retry int
}

type entry struct {
	key string

	// pending: changes observed and not pushed yet.
	pending  bool
	count    int
	seq      uint64
	changes  int
	first    time.Time
	deadline time.Time
	urgent   bool
	retry    int
	// notBefore holds a failed push back until its retry time.
	notBefore time.Time

	// in flight: a push returned by Due and not yet Delivered or Failed.
	inflight      bool
	inflightCount int
	inflightSeq   uint64
	inflightN     int
	inflightFirst time.Time
	inflightRetry int

	pushed      int
	pushedKnown bool

	// queued: a live heap item (one with the entry's version) exists, due
	// at queuedAt. A deadline that moves later keeps that item, which is
	// queued again when it comes up early; only an earlier deadline needs
	// a new item. Items of older versions are stale and skipped.
	queued   bool
	queuedAt time.Time
	version  uint64
}

type item struct {
	deadline time.Time
	key      string
	version  uint64
}

type deadlines []item

func (d deadlines) Len() int { return len(d) }
func (d deadlines) Less(i, j int) bool {
	if d[i].deadline.Equal(d[j].deadline) {
		return d[i].key < d[j].key
	}
	return d[i].deadline.Before(d[j].deadline)
}
func (d deadlines) Swap(i, j int) { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)   { *d = append(*d, x.(item)) }
func (d *deadlines) Pop() any {
	old := *d
	it := old[len(old)-1]
	*d = old[:len(old)-1]
	return it
}

// Coalescer holds the per-key timers. The zero value is not usable; call New.
type Coalescer struct {
	cfg     Config
	entries map[string]*entry
	queue   deadlines
	// versions numbers heap items across all entries, so that an item left
	// by a forgotten entry never passes for one of a new entry of its key.
	versions uint64
}

// New returns a Coalescer with cfg (zero fields take the defaults). It
// panics on a configuration that Validate refuses; check it first.
func New(cfg Config) *Coalescer {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	return &Coalescer{cfg: cfg.WithDefaults(), entries: map[string]*entry{}}
}

// Config returns the timers in use.
func (c *Coalescer) Config() Config { return c.cfg }

// Observe records that key's count changed at now.
func (c *Coalescer) Observe(now time.Time, key string, u Update) {
	e := c.entries[key]
	if e == nil {
		e = &entry{key: key}
		if u.Pushed != nil {
			e.pushed, e.pushedKnown = *u.Pushed, true
		}
		c.entries[key] = e
	}
	if !e.pending {
		e.pending = true
		e.first = now
		e.changes = 0
		e.urgent = false
		e.retry = 0
		e.notBefore = time.Time{}
		e.deadline = now.Add(c.cfg.MaxDelay)
	}
	e.count = u.Count
	e.seq = max(e.seq, u.Seq)
	e.changes++
	switch {
	case u.Change == Increase:
		e.urgent = true
		e.deadline = earliest(e.deadline, now.Add(c.cfg.Hold(u.Waited)))
	case !e.urgent:
		e.deadline = now.Add(c.cfg.Debounce)
	}
	e.deadline = latest(earliest(e.deadline, e.first.Add(c.cfg.MaxDelay)), e.notBefore)
	c.schedule(e)
}

// Due returns the pushes whose deadline is at or before now, earliest
// first. Each push that is not a Skip is in flight until Delivered or
// Failed is called for its key.
func (c *Coalescer) Due(now time.Time) []Push {
	var out []Push
	for {
		e, it, ok := c.peek()
		if !ok || it.deadline.After(now) {
			return out
		}
		heap.Pop(&c.queue)
		e.queued = false
		if e.deadline.After(now) {
			c.schedule(e) // its deadline moved later since it was queued
			continue
		}
		out = append(out, c.take(e))
	}
}

// peek returns the earliest live heap item and its entry, dropping stale
// items and queueing again those whose deadline moved later.
func (c *Coalescer) peek() (*entry, item, bool) {
	for len(c.queue) > 0 {
		it := c.queue[0]
		e := c.entries[it.key]
		if e == nil || it.version != e.version || !e.pending || e.inflight {
			heap.Pop(&c.queue)
			continue
		}
		if e.deadline.After(it.deadline) {
			heap.Pop(&c.queue)
			e.queued = false
			c.schedule(e)
			continue
		}
		return e, it, true
	}
	return nil, item{}, false
}

// Flush returns every pending push that is not waiting for one in flight,
// whatever its deadline: for a shutdown or a hand-over, when waiting longer
// is not an option. Pushes held back after a failure until a retry time
// still to come stay pending: flushing them would only fail again.
func (c *Coalescer) Flush(now time.Time) []Push {
	var out []Push
	var later []*entry
	for len(c.queue) > 0 {
		it := heap.Pop(&c.queue).(item)
		e := c.entries[it.key]
		if e == nil || it.version != e.version || !e.pending || e.inflight {
			continue
		}
		e.queued = false
		if e.notBefore.After(now) {
			later = append(later, e)
			continue
		}
		e.deadline = earliest(e.deadline, now)
		out = append(out, c.take(e))
	}
	for _, e := range later {
		c.schedule(e)
	}
	return out
}

func (c *Coalescer) take(e *entry) Push {
	p := Push{Key: e.key, Count: e.count, Seq: e.seq, Changes: e.changes, First: e.first, Deadline: e.deadline, Retry: e.retry}
	e.pending = false
	e.notBefore = time.Time{}
	e.queued = false
	e.version = c.bump()
	if e.pushedKnown && e.pushed == e.count {
		p.Skip = true
		c.forgetIfIdle(e)
		return p
	}
	e.inflight = true
	e.inflightCount, e.inflightSeq, e.inflightN, e.inflightFirst, e.inflightRetry = e.count, e.seq, e.changes, e.first, e.retry
	return p
}

// Delivered ends key's push in flight: its devices now show count. A change
// observed meanwhile becomes due by its own deadline (at once if it passed).
func (c *Coalescer) Delivered(now time.Time, key string, count int) {
	e := c.entries[key]
	if e == nil || !e.inflight {
		return
	}
	e.inflight = false
	e.pushed, e.pushedKnown = count, true
	if !e.pending {
		c.forgetIfIdle(e)
		return
	}
	c.schedule(e)
}

// Failed ends key's push in flight without delivery. With a zero retryAt
// the push is dropped (dead-lettered): the devices still show what they
// showed. Otherwise it is pending again, due no earlier than retryAt,
// merged with any change observed meanwhile (whose count, being newer,
// wins).
func (c *Coalescer) Failed(now time.Time, key string, retryAt time.Time) {
	e := c.entries[key]
	if e == nil || !e.inflight {
		return
	}
	e.inflight = false
	if retryAt.IsZero() {
		if !e.pending {
			c.forgetIfIdle(e)
			return
		}
		c.schedule(e)
		return
	}
	if !e.pending {
		e.pending = true
		e.count = e.inflightCount
		e.seq = e.inflightSeq
		e.changes = 0
		e.first = e.inflightFirst
		e.urgent = false
		e.deadline = retryAt
	} else {
		e.seq = max(e.seq, e.inflightSeq)
		e.first = earliest(e.first, e.inflightFirst)
		e.deadline = latest(e.deadline, retryAt)
	}
	e.notBefore = retryAt
	e.changes += e.inflightN
	e.retry = e.inflightRetry + 1
	c.schedule(e)
}

// Forget drops everything known about key, in flight or not; for a key
// whose owner changes.
func (c *Coalescer) Forget(key string) {
	if e := c.entries[key]; e != nil {
		e.version = c.bump()
		delete(c.entries, key)
	}
}

// NextDeadline is the earliest deadline of a pending push that is not
// waiting for one in flight; false when there is none.
func (c *Coalescer) NextDeadline() (time.Time, bool) {
	_, it, ok := c.peek()
	return it.deadline, ok
}

// State describes one key, for tests and for showing what replay would do.
type State struct {
	Pending  bool
	Count    int
	Deadline time.Time
	InFlight bool
	// Pushed is the last count delivered, if known.
	Pushed      int
	PushedKnown bool
}

// Inspect returns what the Coalescer holds for key; false when nothing.
func (c *Coalescer) Inspect(key string) (State, bool) {
	e := c.entries[key]
	if e == nil {
		return State{}, false
	}
	return State{Pending: e.pending, Count: e.count, Deadline: e.deadline, InFlight: e.inflight, Pushed: e.pushed, PushedKnown: e.pushedKnown}, true
}

// Len is how many keys have a pending push or one in flight.
func (c *Coalescer) Len() int { return len(c.entries) }

func (c *Coalescer) schedule(e *entry) {
	if !e.pending || e.inflight {
		if e.queued {
			e.version = c.bump()
			e.queued = false
		}
		return
	}
	if e.queued && !e.deadline.Before(e.queuedAt) {
		return
	}
	e.version = c.bump()
	heap.Push(&c.queue, item{deadline: e.deadline, key: e.key, version: e.version})
	e.queued, e.queuedAt = true, e.deadline
}

func (c *Coalescer) bump() uint64 {
	c.versions++
	return c.versions
}

// forgetIfIdle drops an entry with nothing pending or in flight. What it
// knew of the last push is the caller's to keep (unread.State does).
func (c *Coalescer) forgetIfIdle(e *entry) {
	if !e.pending && !e.inflight {
		delete(c.entries, e.key)
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Input is one update of a key observed at At, for Simulate.
type Input struct {
	At     time.Time
	Key    string
	Update Update
}

// Simulate feeds inputs, in time order, to a new Coalescer with cfg, as if
// every push were delivered the moment it became due, and returns the
// decisions in order, Skips included. After the last input it lets time run
// until nothing is pending. Replay uses it to show the pushes a recorded
// sequence of events gives. When an input's Update.Pushed is nil, the count
// last delivered to its key during the simulation is used.
func Simulate(cfg Config, inputs []Input) []Push {
	c := New(cfg)
	pushed := map[string]int{}
	var out []Push
	runUntil := func(t time.Time, all bool) {
		for {
			d, ok := c.NextDeadline()
			if !ok || (!all && d.After(t)) {
				return
			}
			for _, p := range c.Due(d) {
				out = append(out, p)
				if !p.Skip {
					pushed[p.Key] = p.Count
					c.Delivered(d, p.Key, p.Count)
				}
			}
		}
	}
	for _, in := range inputs {
		runUntil(in.At, false)
		u := in.Update
		if u.Pushed == nil {
			if n, ok := pushed[in.Key]; ok {
				u.Pushed = &n
			}
		}
		c.Observe(in.At, in.Key, u)
	}
	runUntil(time.Time{}, true)
	return out
}
