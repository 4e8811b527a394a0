package manage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pushproxy/pushproxy/internal/sources/records"
)

// Action is what an entry needs next. A source numbers its own from 1;
// None and Store are the Core's.
type Action int

const (
	// None: nothing is to be done.
	None Action = 0
	// Store writes the entry's state to the store, without asking the
	// mail system: what a failed write left out, or what the source
	// changed (a newer watermark).
	Store Action = -1
)

// Entry is a Core's view of one user's subscription, by store key. Its
// fields are guarded by the Core's lock.
type Entry[U any, S comparable, X any] struct {
	// Key is the store key (records.UserKey of the user).
	Key string
	// User is the listed user.
	User U
	// Managed: the user is listed and gets a subscription.
	Managed bool
	// State is the current subscription, nil when there is none.
	State *S
	// Stored: the store holds State as it is (nothing when State is nil).
	Stored bool
	// Failures counts the operations that failed in a row; the next is
	// not tried before RetryAt.
	Failures int
	RetryAt  time.Time
	// Busy: an operation is in flight.
	Busy bool
	// Extra is what the source keeps besides.
	Extra X
}

// Job is one operation, with what it needs from its entry.
type Job[U any, S comparable, J any] struct {
	Key  string
	Act  Action
	User U
	// Old is a copy of the entry's subscription when the job started.
	Old *S
	// Extra is what the source's operation needs, and learns.
	Extra J
}

// Result is what an operation did.
type Result[S comparable] struct {
	// Changed: State (nil: none) replaces the entry's subscription, and
	// the store gets it.
	Changed bool
	State   *S
	Err     error
}

// Failure is an operation that failed, for the source's log line.
type Failure struct {
	Err      error
	Failures int
	RetryAt  time.Time
	RetryIn  time.Duration
}

// Tally is what Tend counts of the entries, for the gauges and the
// progress line.
type Tally struct {
	// Managed and Active count the listed users and those with a live
	// subscription; Pending the subscriptions still to be made.
	Managed, Active, Pending int
	// Earliest is the earliest time Note was given (the source says of
	// what); zero when none was.
	Earliest time.Time
}

// Note keeps at in Earliest when it is earlier.
func (t *Tally) Note(at time.Time) {
	if t.Earliest.IsZero() || at.Before(t.Earliest) {
		t.Earliest = at
	}
}

// Policy is the source's half of a manager. The methods that take an
// entry are called with the Core's lock held.
type Policy[U any, S comparable, X, J any] interface {
	// List reads the users to keep subscriptions for.
	List(ctx context.Context) ([]U, error)
	// Serves reports whether the source keeps a subscription for u.
	Serves(u U) bool
	// Who is u's tenant and address; its store key is their
	// records.UserKey.
	Who(u U) (tenant, address string)
	// ID is the subscription id of st.
	ID(st *S) string
	// Restore is the user and the extra of an entry loaded with st.
	Restore(st *S) (U, X)
	// Loaded is told, with the lock held, what Load found: stored records,
	// managed users (listed and served), skipped users (listed, not
	// served).
	Loaded(stored, managed, skipped int)
	// Next is the entry's next action and when it is due (the zero time:
	// now); None for a busy entry.
	Next(e *Entry[U, S, X], now time.Time) (Action, time.Time)
	// Urgent reports whether the entry's due action goes before the
	// others.
	Urgent(e *Entry[U, S, X]) bool
	// Start is the extra of a job that does act for e, as it starts at
	// now; it may change e.
	Start(e *Entry[U, S, X], act Action, now time.Time) J
	// Perform does the mail system's side of a job (never Store).
	Perform(ctx context.Context, j *Job[U, S, J]) Result[S]
	// Settle hands a job's outcome (never Store) to its entry, nil when
	// the entry is gone: written is what the store got when stored is
	// true. The Core then counts the failure, if any, and forgets an
	// entry that is not managed, has no subscription and is stored.
	Settle(e *Entry[U, S, X], j *Job[U, S, J], res Result[S], written *S, stored bool)
	// Failed logs a job that failed (and was not cut short by stopping).
	Failed(j *Job[U, S, J], f Failure)
	// Count adds e, whose next action is act due at due, to t.
	Count(t *Tally, e *Entry[U, S, X], act Action, due, now time.Time)
	// Gauge sets the source's gauges from t (a zero Tally when Run
	// returned).
	Gauge(t Tally, now time.Time)
}

// Words are what a Core writes of the source's subscriptions in its errors
// and logs.
type Words struct {
	// Subscriptions names them: "EWS subscriptions".
	Subscriptions string
	// Unreadable is the log line of stored records that cannot be read.
	Unreadable string
	// Users are those List reads: "the mailboxes to subscribe to".
	Users string
	// Operation names one: "an EWS subscription operation".
	Operation string
	// Made and ToMake are the fields of the progress line (the
	// subscriptions made since the last line, those still to make), Making
	// its message.
	Made, ToMake, Making string
}

// Config configures a Core.
type Config[U any, S comparable, X, J any] struct {
	// Options are checked (Options.Defaults) by the source.
	Options Options
	// Store keeps the subscriptions across restarts; BadRecord is what
	// the error of its List matches for an unreadable record.
	Store     records.Store[S]
	BadRecord error
	// ListInterval is how often the users are listed again.
	ListInterval time.Duration
	Words        Words
	Policy       Policy[U, S, X, J]
	// Relisted, when set, runs in Run after each new listing.
	Relisted func(ctx context.Context)
	// Stopping, when set, runs when Run's context ends, once the
	// operations in flight are finished.
	Stopping func(ctx context.Context)
}

// Core keeps the entries of a manager and runs its loop. Run it in one
// process only: two on one store would each make subscriptions.
type Core[U any, S comparable, X, J any] struct {
	cfg     Config[U, S, X, J]
	opts    Options
	p       Policy[U, S, X, J]
	limiter *rate.Limiter
	// wake tells Run that there may be work: a notification, a finished
	// operation.
	wake chan struct{}
	// workers are the operations in flight.
	workers sync.WaitGroup

	mu      sync.Mutex
	loaded  bool
	entries map[string]*Entry[U, S, X]
	// bySub finds the key of a subscription id.
	bySub    map[string]string
	inflight int
	// made counts subscriptions made since the last progress line, at
	// lastProgress.
	made         int
	lastProgress time.Time
}

// New returns a Core of cfg.
func New[U any, S comparable, X, J any](cfg Config[U, S, X, J]) *Core[U, S, X, J] {
	return &Core[U, S, X, J]{
		cfg: cfg, opts: cfg.Options, p: cfg.Policy,
		limiter: rate.NewLimiter(rate.Limit(cfg.Options.Rate), 1),
		wake:    make(chan struct{}, 1),
		entries: map[string]*Entry[U, S, X]{},
		bySub:   map[string]string{},
	}
}

// Run keeps the subscriptions until ctx ends: it loads the store and the
// list (Load), then starts the operations as they fall due, reading the
// list again every ListInterval. It returns nil when ctx ends (once the
// operations in flight and Stopping are done), or the error that kept it
// from loading the store or the list.
//
// Run may be called again after it returned (the lease of a standby
// ingest, see broker.Lease): each Run starts from the store.
func (c *Core[U, S, X, J]) Run(ctx context.Context) error {
	defer c.unload()
	if err := c.Load(ctx); err != nil {
		return err
	}
	listAt := c.opts.Now().Add(c.cfg.ListInterval)
	for {
		c.Dispatch(ctx)
		wait := c.Tend()
		now := c.opts.Now()
		if !now.Before(listAt) {
			c.Relist(ctx)
			if c.cfg.Relisted != nil {
				c.cfg.Relisted(ctx)
			}
			listAt = now.Add(c.cfg.ListInterval)
		}
		wait = min(wait, listAt.Sub(now))
		select {
		case <-ctx.Done():
			c.workers.Wait()
			if c.cfg.Stopping != nil {
				c.cfg.Stopping(ctx)
			}
			c.Tend()
			c.opts.Log.Info().Msg("stopped managing " + c.cfg.Words.Subscriptions)
			return nil
		case <-c.wake:
		case <-c.opts.After(wait):
		}
	}
}

// Load reads the store and the list, the first step of Run. A record that
// cannot be read is logged and left out: its user gets a new
// subscription.
func (c *Core[U, S, X, J]) Load(ctx context.Context) error {
	stored, err := c.cfg.Store.List(ctx)
	if err != nil && !errors.Is(err, c.cfg.BadRecord) {
		return fmt.Errorf("loading the %s: %w", c.cfg.Words.Subscriptions, err)
	}
	if err != nil {
		c.opts.Log.Error().Err(err).Msg(c.cfg.Words.Unreadable)
	}
	users, err := c.p.List(ctx)
	if err != nil {
		return fmt.Errorf("listing %s: %w", c.cfg.Words.Users, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	clear(c.bySub)
	for key, st := range stored {
		u, x := c.p.Restore(&st)
		c.entries[key] = &Entry[U, S, X]{Key: key, User: u, State: &st, Stored: true, Extra: x}
		c.bySub[c.p.ID(&st)] = key
	}
	skipped := c.apply(users)
	c.loaded = true
	managed := 0
	for _, e := range c.entries {
		if e.Managed {
			managed++
		}
	}
	c.lastProgress = c.opts.Now()
	c.p.Loaded(len(stored), managed, skipped)
	return nil
}

// Relist reads the list again; a list that cannot be read leaves
// everything as it is.
func (c *Core[U, S, X, J]) Relist(ctx context.Context) {
	users, err := c.p.List(ctx)
	if err != nil {
		c.opts.Log.Warn().Err(err).Msg("could not list " + c.cfg.Words.Users + "; keeping the subscriptions as they are")
		return
	}
	c.mu.Lock()
	c.apply(users)
	c.mu.Unlock()
	c.Signal()
}

// unload forgets what Run loaded when it returns: until the next Run loads
// the store again, Loaded is false. The gauges go to zero: another process
// may keep the subscriptions now.
func (c *Core[U, S, X, J]) unload() {
	c.mu.Lock()
	c.loaded = false
	c.mu.Unlock()
	c.p.Gauge(Tally{}, c.opts.Now())
}

// apply makes users the managed ones and returns how many it skipped (not
// served). Called with the lock held.
func (c *Core[U, S, X, J]) apply(users []U) (skipped int) {
	for _, e := range c.entries {
		e.Managed = false
	}
	for _, u := range users {
		if !c.p.Serves(u) {
			skipped++
			continue
		}
		key := records.UserKey(c.p.Who(u))
		e := c.entries[key]
		if e == nil {
			e = &Entry[U, S, X]{Key: key, Stored: true}
			c.entries[key] = e
		}
		e.User, e.Managed = u, true
	}
	for key, e := range c.entries {
		if !e.Managed && e.State == nil && e.Stored && !e.Busy {
			delete(c.entries, key)
		}
	}
	return skipped
}

// Signal wakes Run.
func (c *Core[U, S, X, J]) Signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Backoff is the wait after the n-th failure in a row.
func (c *Core[U, S, X, J]) Backoff(n int) time.Duration {
	d := c.opts.ErrorBackoff
	for i := 1; i < n && d < c.opts.MaxErrorBackoff; i++ {
		d *= 2
	}
	return min(d, c.opts.MaxErrorBackoff)
}

// Wait waits for the rate limit: every request of the manager does.
func (c *Core[U, S, X, J]) Wait(ctx context.Context) error { return c.limiter.Wait(ctx) }

// Dispatch starts the operations that are due, as many as Concurrency
// allows (the urgent ones first, then the longest due), and returns how
// many it started.
func (c *Core[U, S, X, J]) Dispatch(ctx context.Context) int {
	type candidate struct {
		e      *Entry[U, S, X]
		act    Action
		due    time.Time
		urgent bool
	}
	c.mu.Lock()
	free := c.opts.Concurrency - c.inflight
	if free <= 0 {
		c.mu.Unlock()
		return 0
	}
	now := c.opts.Now()
	var cands []candidate
	for _, e := range c.entries {
		act, due := c.p.Next(e, now)
		if act != None && !due.After(now) {
			cands = append(cands, candidate{e: e, act: act, due: due, urgent: c.p.Urgent(e)})
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.urgent != b.urgent {
			if a.urgent {
				return -1
			}
			return 1
		}
		return cmp.Or(a.due.Compare(b.due), cmp.Compare(a.e.Key, b.e.Key))
	})
	jobs := make([]*Job[U, S, J], 0, min(free, len(cands)))
	for _, cand := range cands[:min(free, len(cands))] {
		jobs = append(jobs, c.start(cand.e, cand.act, now))
	}
	c.mu.Unlock()
	for _, j := range jobs {
		c.workers.Go(func() { c.work(ctx, j) })
	}
	return len(jobs)
}

// start makes the job of act for e and marks e busy. Called with the lock
// held.
func (c *Core[U, S, X, J]) start(e *Entry[U, S, X], act Action, now time.Time) *Job[U, S, J] {
	j := &Job[U, S, J]{Key: e.Key, Act: act, User: e.User}
	if e.State != nil {
		old := *e.State
		j.Old = &old
	}
	if act != Store {
		j.Extra = c.p.Start(e, act, now)
	}
	e.Busy = true
	c.inflight++
	return j
}

// Each does act for every entry that is not busy and that pick chooses,
// Concurrency at a time, waits for them, and returns how many it did (the
// Graph manager's deletions on stopping).
func (c *Core[U, S, X, J]) Each(ctx context.Context, act Action, pick func(*Entry[U, S, X]) bool) int {
	c.mu.Lock()
	now := c.opts.Now()
	var jobs []*Job[U, S, J]
	for _, e := range c.entries {
		if !e.Busy && pick(e) {
			jobs = append(jobs, c.start(e, act, now))
		}
	}
	c.mu.Unlock()
	sem := make(chan struct{}, c.opts.Concurrency)
	for _, j := range jobs {
		sem <- struct{}{}
		c.workers.Go(func() {
			defer func() { <-sem }()
			c.work(ctx, j)
		})
	}
	c.workers.Wait()
	return len(jobs)
}

// work runs one job, writes its outcome to the store and hands it to the
// entry.
func (c *Core[U, S, X, J]) work(ctx context.Context, j *Job[U, S, J]) {
	var (
		res     Result[S]
		written *S
		write   = true
	)
	switch {
	case j.Act == Store:
		written = j.Old
	default:
		res = c.p.Perform(ctx, j)
		write = res.Changed
		if res.State != nil {
			copied := *res.State
			written = &copied
		}
	}
	stored := true
	if write {
		if err := c.persist(ctx, j.Key, written); err != nil {
			stored = false
			res.Err = errors.Join(res.Err, err)
		}
	}
	c.finish(j, res, written, stored)
	c.Signal()
}

// persist writes st as the record of key (deletes it when nil). The write
// outlives ctx by up to RequestTimeout: what the mail system did must not
// be forgotten because the manager is stopping.
func (c *Core[U, S, X, J]) persist(ctx context.Context, key string, st *S) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.RequestTimeout)
	defer cancel()
	if st == nil {
		return c.cfg.Store.Delete(ctx, key)
	}
	return c.cfg.Store.Put(ctx, key, *st)
}

// finish hands a job's outcome to its entry: written is what the store got
// when stored is true.
func (c *Core[U, S, X, J]) finish(j *Job[U, S, J], res Result[S], written *S, stored bool) {
	c.mu.Lock()
	c.inflight--
	e := c.entries[j.Key]
	if e != nil {
		e.Busy = false
	}
	switch {
	case j.Act != Store:
		c.p.Settle(e, j, res, written, stored)
	case e != nil:
		// What was written may be older than the state by now.
		e.Stored = stored && same(e.State, written)
	}
	if e == nil {
		c.mu.Unlock()
		return
	}
	var retryIn time.Duration
	if res.Err != nil {
		e.Failures++
		retryIn = c.Backoff(e.Failures)
		e.RetryAt = c.opts.Now().Add(retryIn)
	} else {
		e.Failures, e.RetryAt = 0, time.Time{}
	}
	if !e.Managed && e.State == nil && e.Stored {
		delete(c.entries, j.Key)
	}
	f := Failure{Err: res.Err, Failures: e.Failures, RetryAt: e.RetryAt, RetryIn: retryIn}
	c.mu.Unlock()
	switch {
	case res.Err == nil:
	case errors.Is(res.Err, context.Canceled):
		_, user := c.p.Who(j.User)
		c.opts.Log.Debug().Err(res.Err).Str("user", user).Msg(c.cfg.Words.Operation + " was cut short by stopping")
	default:
		c.p.Failed(j, f)
	}
}

// Tend sets the gauges, writes the progress line when it is time, and
// returns how long Run may wait for the next due operation.
func (c *Core[U, S, X, J]) Tend() time.Duration {
	c.mu.Lock()
	now := c.opts.Now()
	var (
		t       Tally
		nextDue time.Time
		haveDue bool
	)
	for _, e := range c.entries {
		act, due := c.p.Next(e, now)
		if act != None && (!haveDue || due.Before(nextDue)) {
			nextDue, haveDue = due, true
		}
		c.p.Count(&t, e, act, due, now)
	}
	made := c.made
	report := now.Sub(c.lastProgress) >= ProgressInterval && (t.Pending > 0 || made > 0)
	if report {
		c.made, c.lastProgress = 0, now
	}
	c.mu.Unlock()

	c.p.Gauge(t, now)
	if report {
		w := c.cfg.Words
		c.opts.Log.Info().Int(w.Made, made).Int(w.ToMake, t.Pending).Int("active", t.Active).Int("managed", t.Managed).Msg(w.Making)
	}
	wait := ProgressInterval
	if haveDue && nextDue.After(now) {
		wait = min(wait, nextDue.Sub(now))
	}
	// Work due now waits for a free slot: a finished operation wakes Run.
	return wait
}

// Made counts a subscription made, for the progress line.
func (c *Core[U, S, X, J]) Made() {
	c.mu.Lock()
	c.made++
	c.mu.Unlock()
}

// Lock takes the lock that guards the entries (and what the source keeps
// beside them); Unlock releases it.
func (c *Core[U, S, X, J]) Lock() { c.mu.Lock() }

// Unlock releases the lock Lock took.
func (c *Core[U, S, X, J]) Unlock() { c.mu.Unlock() }

// Loaded reports whether Run has loaded the store (and not returned).
// Called with the lock held.
func (c *Core[U, S, X, J]) Loaded() bool { return c.loaded }

// InFlight is the number of operations in flight. Called with the lock
// held.
func (c *Core[U, S, X, J]) InFlight() int { return c.inflight }

// All yields every entry. Called with the lock held.
func (c *Core[U, S, X, J]) All() iter.Seq[*Entry[U, S, X]] { return maps.Values(c.entries) }

// Find is the entry whose current subscription is id, nil when there is
// none. Called with the lock held.
func (c *Core[U, S, X, J]) Find(id string) *Entry[U, S, X] {
	e := c.entries[c.bySub[id]]
	if e == nil || e.State == nil || c.p.ID(e.State) != id {
		return nil
	}
	return e
}

// Replace makes st (nil: none) the subscription of e. Called with the lock
// held.
func (c *Core[U, S, X, J]) Replace(e *Entry[U, S, X], st *S) {
	if e.State != nil {
		if id := c.p.ID(e.State); c.bySub[id] == e.Key {
			delete(c.bySub, id)
		}
	}
	e.State = st
	if st != nil {
		c.bySub[c.p.ID(st)] = e.Key
	}
}

// Woken is the channel that wakes Run, for tests that do its steps
// themselves (managetest.Drain).
func (c *Core[U, S, X, J]) Woken() <-chan struct{} { return c.wake }

// same reports whether a and b are both nil, or point to equal states.
func same[S comparable](a, b *S) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
