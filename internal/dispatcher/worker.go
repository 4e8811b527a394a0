package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// pinHeader is the header the server sets on messages of a pinned
// priority-group consumer.
const pinHeader = "Nats-Pin-Id"

// syncCheckInterval bounds how often a syncing partition asks the server
// whether other dispatchers' events are still pending.
const syncCheckInterval = 100 * time.Millisecond

// sweepInterval is how often idle users leave the state cache.
const sweepInterval = 10 * time.Second

// heldSlab is how many held events receive allocates at once: few
// allocations per fetch, while an event held for long (its push retried)
// keeps little memory of its neighbours alive.
const heldSlab = 32

// maxTermReason bounds the reason of a terminated event, which the
// advisory carries.
const maxTermReason = 200

// held is an event delivered to this dispatcher and not yet acknowledged.
type held struct {
	msg  jetstream.Msg
	seq  uint64
	user *userRec
	// at is when ingest received the event (or when it occurred), for the
	// event-to-push latency.
	at time.Time
	// touched is the last delivery or in-progress ack.
	touched time.Time
	// released: acknowledged, terminated or given up; no longer counted.
	released bool
}

// userRec is what a partition worker knows of one user.
type userRec struct {
	key          string
	tenant, user string
	loaded       bool
	state        unread.State
	rev          uint64
	dirty        bool

	// pending are applied events not yet covered by a push; inflight are
	// those the push in flight covers.
	pending  []*held
	inflight []*held
	push     *pushInfo
	job      *job
	// toLoad: queued for loading by the apply in progress.
	toLoad bool

	// requeues counts retries of the current push after device retries or
	// missing results; attempts counts its relay requests.
	deviceRetries int
	requeues      int
	attempts      int
	lastActive    time.Time
}

func (r *userRec) idle() bool {
	return len(r.pending) == 0 && len(r.inflight) == 0 && r.push == nil
}

// pushInfo is the push in flight of a user.
type pushInfo struct {
	count    int
	seq      uint64
	previous *int
	exact    bool
	subs     []subscriptions.Subscription
	notes    []relayproto.Notification
}

// removal is a subscription to remove on the relay's word.
type removal struct {
	key, status, reason, ref string
}

// settleTask is the I/O that ends a push (or a skip): dead letters, the
// state, the sent record, removed devices; then its events are acknowledged.
type settleTask struct {
	rec    *userRec
	msgs   []*held
	skip   string
	sent   *SentRecord
	dead   []DeadLetter
	remove []removal
	ok     bool
	merged bool
}

// worker consumes one partition: it applies the events in stream order,
// coalesces them per user, hands pushes to the sender and settles their
// results. Everything but the fetch loop runs on one goroutine, so a user's
// events are applied one at a time, in order.
type worker struct {
	d         *Dispatcher
	partition int
	label     string
	name      string
	cons      jetstream.Consumer
	log       zerolog.Logger

	co        *coalesce.Coalescer
	validator events.Validator
	users     map[string]*userRec
	ready     []*held

	// syncing: this worker just became the partition's consumer and holds
	// its events until no other dispatcher's events are pending, so that a
	// takeover never applies a user's events out of order.
	syncing       bool
	syncBuf       []*held
	syncSeqs      map[uint64]*held
	lastSyncCheck time.Time
	// syncWant is how many events the consumer had pending at the last
	// check that found others': once this worker holds that many, they
	// were probably its own on their way, and it checks again at once.
	syncWant int64
	pin      string

	// evs is apply's buffer of decoded events, reused between batches.
	evs []events.Event

	heldN    atomic.Int64
	draining atomic.Bool
	syncFlag atomic.Bool

	inbox   *queue[jetstream.Msg]
	wake    chan struct{}
	quit    chan struct{}
	results *queue[result]
	stop    chan struct{}
	stopped sync.Once
	done    chan struct{}
}

func (d *Dispatcher) newWorker(partition int) *worker {
	name := consumerName(d.cfg.ConsumerPrefix, partition)
	return &worker{
		d:         d,
		partition: partition,
		label:     strconv.Itoa(partition),
		name:      name,
		log:       d.log.With().Int("partition", partition).Logger(),
		co:        coalesce.New(d.cfg.Coalesce),
		users:     map[string]*userRec{},
		inbox:     newQueue[jetstream.Msg](),
		wake:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		results:   newQueue[result](),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// requestStop asks the worker to hand its partition over: stop fetching,
// flush what is due, settle, unpin.
func (w *worker) requestStop() { w.stopped.Do(func() { close(w.stop) }) }

// run consumes until stopped or until consuming fails; ctx bounds the I/O.
func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	defer close(w.quit)
	defer w.abandon()
	defer w.d.metrics.held.DeleteLabelValues(w.label)
	defer w.d.metrics.pending.DeleteLabelValues(w.label)
	defer w.d.metrics.ackPending.DeleteLabelValues(w.label)

	cons, err := w.d.js.Consumer(ctx, w.d.stream, w.name)
	if err != nil {
		w.log.Warn().Err(err).Str("consumer", w.name).Msg("cannot open the partition's consumer")
		return
	}
	w.cons = cons
	expiry := max(time.Second, w.d.cfg.PinnedTTL/2)
	cc, err := cons.Consume(w.deliver,
		jetstream.PullPriorityGroup(w.d.cfg.PriorityGroup),
		jetstream.PullMaxMessages(w.d.cfg.FetchBatch),
		jetstream.PullExpiry(expiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			w.log.Debug().Err(err).Msg("consuming")
		}),
	)
	if err != nil {
		w.log.Warn().Err(err).Msg("cannot consume the partition")
		return
	}
	defer cc.Stop()
	w.setSyncing(true)
	w.d.metrics.takeovers.Inc()
	w.log.Info().Msg("consuming partition")

	keepAlive := time.NewTicker(max(w.d.cfg.AckWait/4, 50*time.Millisecond))
	defer keepAlive.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	fetchEnded := false
loop:
	for {
		w.armTimer(timer)
		select {
		case <-w.stop:
			break loop
		case <-cc.Closed():
			fetchEnded = true
			break loop
		case <-w.inbox.C():
			w.receive(ctx, w.inbox.Take(w.d.cfg.FetchBatch))
		case <-w.results.C():
			w.handleResults(ctx, w.results.Take(0))
		case <-timer.C:
		case <-keepAlive.C:
			w.keepAlive()
		case <-sweep.C:
			w.sweep(time.Now())
		}
		if w.syncing && len(w.syncBuf) > 0 {
			w.checkSync(ctx)
			w.apply(ctx, time.Now())
		}
		w.dispatch(ctx, w.co.Due(time.Now()), time.Now())
	}
	w.handOver(ctx, cc, fetchEnded, keepAlive)
}

// deliver is the consume callback: it queues a message for the worker, or
// waits while the gate is closed: no more than MaxAckPending held, and no
// more than BreakerHold while the relay is unhealthy (except while syncing
// or draining). Waiting here stops the pulls, which is the point.
func (w *worker) deliver(m jetstream.Msg) {
	for !w.mayFetch() {
		select {
		case <-w.quit:
			return
		case <-w.wake:
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Counted here, not when the worker gets to it, so the gate sees it.
	w.heldN.Add(1)
	w.inbox.Push(m)
}

// handOver stops fetching, processes what was already fetched, flushes
// every pending push and waits (up to ShutdownTimeout) for the pushes in
// flight, then unpins the consumer so the next owner starts at once. What
// is not settled by then stays unacknowledged, for redelivery.
func (w *worker) handOver(ctx context.Context, cc jetstream.ConsumeContext, fetchEnded bool, keepAlive *time.Ticker) {
	if w.d.nc.IsClosed() {
		// The connection is gone: nothing can be acknowledged or recorded,
		// and pushing now could overtake the partition's next owner.
		w.log.Warn().Int64("events_held", w.heldN.Load()).Msg("connection closed; held events will be redelivered")
		return
	}
	deadline := time.NewTimer(w.d.cfg.ShutdownTimeout)
	defer deadline.Stop()
	w.draining.Store(true)
	w.signalWake()
	cc.Drain()
	for !fetchEnded {
		select {
		case <-cc.Closed():
			fetchEnded = true
		case <-w.inbox.C():
			w.receive(ctx, w.inbox.Take(w.d.cfg.FetchBatch))
		case <-deadline.C:
			cc.Stop()
			fetchEnded = true
		}
	}
	for w.inbox.Len() > 0 {
		w.receive(ctx, w.inbox.Take(w.d.cfg.FetchBatch))
	}
	for {
		if !w.syncing {
			w.dispatch(ctx, w.co.Flush(time.Now()), time.Now())
		}
		if w.inFlight() == 0 {
			break
		}
		select {
		case <-w.results.C():
			w.handleResults(ctx, w.results.Take(0))
		case <-keepAlive.C:
			w.keepAlive()
		case <-deadline.C:
			w.log.Warn().Int("pushes_in_flight", w.inFlight()).Int64("events_held", w.heldN.Load()).
				Msg("hand-over timed out; unsettled events will be redelivered")
			return
		}
	}
	w.unpin(ctx)
	w.log.Info().Int64("events_left", w.heldN.Load()).Msg("released partition")
}

// abandon marks the pushes not yet answered so the sender drops those it
// has not sent.
func (w *worker) abandon() {
	for _, r := range w.users {
		if r.job != nil {
			r.job.abandoned.Store(true)
		}
	}
}

func (w *worker) inFlight() int {
	n := 0
	for _, r := range w.users {
		if r.push != nil {
			n++
		}
	}
	return n
}

func (w *worker) mayFetch() bool {
	if w.draining.Load() || w.syncFlag.Load() {
		return true
	}
	n := w.heldN.Load()
	if n >= int64(w.d.cfg.MaxAckPending) {
		return false
	}
	return n < int64(w.d.cfg.BreakerHold) || w.d.relayUp()
}

func (w *worker) signalWake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) setSyncing(v bool) {
	w.syncing = v
	w.syncFlag.Store(v)
}

func (w *worker) armTimer(t *time.Timer) {
	now := time.Now()
	next, ok := w.co.NextDeadline()
	if w.syncing && len(w.syncBuf) > 0 {
		check := w.lastSyncCheck.Add(syncCheckInterval)
		if !ok || check.Before(next) {
			next, ok = check, true
		}
	}
	wait := time.Hour
	if ok {
		wait = max(next.Sub(now), 0)
	}
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(wait)
}

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
		}
		seq, delivered, err := deliveryOf(m.Reply())
		if err != nil {
			w.log.Warn().Err(err).Msg("message without JetStream metadata")
			w.heldN.Add(-1)
			continue
		}
		if delivered > 1 {
			w.d.metrics.redelivered.Inc()
			if h := w.findHeld(m.Subject(), seq); h != nil {
				// Redelivered while held: keep the newest handle.
				h.msg, h.touched = m, now
				w.heldN.Add(-1)
				continue
			}
		}
		if len(slab) == 0 {
			slab = make([]held, min(heldSlab, len(msgs)-i))
		}
		h := &slab[0]
		slab = slab[1:]
		*h = held{msg: m, seq: seq, touched: now}
		if w.syncing {
			w.holdForSync(h)
		} else {
			w.ready = append(w.ready, h)
		}
	}
	if w.syncing {
		w.checkSync(ctx)
	}
	w.apply(ctx, now)
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

// apply decodes the ready events, loads the states of users not cached,
// and applies the events in order, feeding the coalescer.
func (w *worker) apply(ctx context.Context, now time.Time) {
	if len(w.ready) == 0 {
		return
	}
	ready := w.ready
	w.ready = nil
	keep := ready[:0]
	evs := w.evs[:0] // evs[i] is keep[i]'s event
	defer func() {
		clear(evs) // drop the strings until the next batch
		w.evs = evs[:0]
	}()
	var load []*userRec
	for _, h := range ready {
		key, ok := userKeyOf(h.msg.Subject())
		if !ok {
			w.terminate(h, "subject is not mail.<partition>.<tenant>.<user>")
			continue
		}
		rec := w.users[key]
		var known knownStrings
		if rec != nil {
			known = knownStrings{tenant: rec.tenant, user: rec.user}
		}
		e, err := decodeEventKnown(h.msg.Data(), known, &w.validator)
		if err != nil {
			w.terminate(h, err.Error())
			continue
		}
		// The keyed hash is checked once per user and spelling.
		if (rec == nil || rec.tenant != e.Tenant || rec.user != e.User) && w.d.keyer.UserKey(e.Tenant, e.User) != key {
			w.terminate(h, "the event's tenant and user do not match its subject")
			continue
		}
		evs = append(evs, e)
		h.at = e.ReceivedAt
		if h.at.IsZero() {
			h.at = e.OccurredAt
		}
		if rec == nil {
			rec = &userRec{key: key, tenant: e.Tenant, user: e.User}
			w.users[key] = rec
		}
		if !rec.loaded && !rec.toLoad {
			rec.toLoad = true
			load = append(load, rec)
		}
		h.user = rec
		keep = append(keep, h)
	}
	loaded := w.load(ctx, load)
	for _, rec := range load {
		rec.toLoad = false
	}
	if !loaded {
		// Shutting down: leave the events unacknowledged for redelivery.
		for _, h := range keep {
			w.forget(h)
		}
		return
	}
	nApplied := 0
	for i, h := range keep {
		rec := h.user
		prev := rec.state.Count
		st, applied := unread.Apply(rec.state, &evs[i], h.seq, w.d.cfg.Unread)
		if applied {
			rec.state, rec.dirty = st, true
			nApplied++
		}
		rec.pending = append(rec.pending, h)
		rec.lastActive = now
		w.co.Observe(now, rec.key, coalesce.Update{Count: rec.state.Count, Seq: h.seq, Change: coalesce.ChangeOf(prev, rec.state.Count), Pushed: rec.state.LastPushedCount})
	}
	w.d.metrics.applied.Add(float64(nApplied))
	w.d.metrics.alreadyApplied.Add(float64(len(keep) - nApplied))
}

// load reads the states of recs (distinct users), retrying until it works
// or ctx ends.
func (w *worker) load(ctx context.Context, recs []*userRec) bool {
	for attempt := 0; ; attempt++ {
		var unloaded []*userRec
		for _, r := range recs {
			if !r.loaded {
				unloaded = append(unloaded, r)
			}
		}
		if len(unloaded) == 0 {
			return true
		}
		// One batched read for all of them, rather than a request each.
		keys := make([]string, len(unloaded))
		for i, r := range unloaded {
			keys[i] = r.key
		}
		got, err := w.d.unread.GetMany(ctx, keys)
		if err == nil {
			for i, r := range unloaded {
				r.state, r.rev, r.loaded = got[i].State, got[i].Rev, true
			}
			return true
		}
		w.log.Warn().Err(err).Msg("reading unread states; retrying")
		select {
		case <-ctx.Done():
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
	if err := h.msg.TermWithReason(reason); err != nil {
		w.log.Warn().Err(err).Uint64("seq", h.seq).Msg("terminating an invalid event")
	}
	w.log.Warn().Uint64("seq", h.seq).Str("reason", reason).Msg("terminated an invalid event")
	w.d.metrics.invalid.Inc()
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

// dispatch acts on pushes that are due: skips settle at once, the others
// go to the sender.
func (w *worker) dispatch(ctx context.Context, pushes []coalesce.Push, now time.Time) {
	if len(pushes) == 0 || w.d.nc.IsClosed() {
		return
	}
	proxy := w.d.proxy()
	var tasks []*settleTask
	for _, p := range pushes {
		rec := w.users[p.Key]
		if rec == nil {
			w.co.Forget(p.Key)
			continue
		}
		msgs := rec.pending
		rec.pending = nil
		if p.Skip {
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, skip: "unchanged"})
			continue
		}
		if !proxy.enabled {
			w.co.Failed(now, p.Key, time.Time{})
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, skip: "proxy_disabled"})
			continue
		}
		subs := w.d.devices(rec.key)
		if len(subs) == 0 {
			w.co.Failed(now, p.Key, time.Time{})
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, skip: "no_subscriptions"})
			continue
		}
		rec.inflight = msgs
		rec.push = &pushInfo{count: p.Count, seq: p.Seq, previous: rec.state.LastPushedCount, exact: rec.state.Exact,
			subs: subs, notes: notifications(rec.tenant, p.Count, subs)}
		rec.job = &job{w: w, key: rec.key, notes: rec.push.notes}
		w.d.sender.submit(rec.job)
	}
	w.settle(ctx, tasks, now)
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
		rec := w.users[r.key]
		if rec == nil || rec.push == nil {
			continue
		}
		push, msgs := rec.push, rec.inflight
		rec.push, rec.inflight, rec.job = nil, nil, nil
		rec.attempts += r.attempts
		switch r.outcome {
		case outcomeDisabled:
			w.co.Failed(now, rec.key, time.Time{})
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, skip: "proxy_disabled"})
		case outcomeRetry:
			w.requeue(rec, msgs, now, r.reason, r.retryAfter)
		case outcomeDead:
			w.co.Failed(now, rec.key, time.Time{})
			w.d.metrics.pushes.WithLabelValues("failed").Inc()
			tasks = append(tasks, &settleTask{rec: rec, msgs: msgs, dead: w.deadLetters(rec, push.notes, msgs, r.reason, errString(r.err), nil, now)})
			rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
		case outcomeAnswered:
			if t := w.answered(rec, push, msgs, r, now); t != nil {
				tasks = append(tasks, t)
			}
		}
	}
	w.settle(ctx, tasks, now)
}

// requeue puts a push back to be tried after a back-off.
func (w *worker) requeue(rec *userRec, msgs []*held, now time.Time, reason string, hint time.Duration) {
	rec.requeues++
	delay := w.d.cfg.RetryDelay << min(rec.requeues-1, 20)
	delay = min(max(delay, w.d.cfg.RetryDelay), w.d.cfg.MaxRetryDelay)
	delay = max(delay, hint)
	w.co.Failed(now, rec.key, now.Add(delay))
	rec.pending = append(msgs, rec.pending...)
	w.d.metrics.requeued.WithLabelValues(reason).Inc()
	w.d.metrics.pushes.WithLabelValues("requeued").Inc()
}

// answered acts on the per-device results of a push the relay accepted.
func (w *worker) answered(rec *userRec, push *pushInfo, msgs []*held, r result, now time.Time) *settleTask {
	// The lookups below are built only when a device is gone or rejected:
	// most pushes are delivered to every device and need none of them.
	var subByDevice map[string]subscriptions.Subscription
	subOf := func(appID, deviceID string) (subscriptions.Subscription, bool) {
		if subByDevice == nil {
			subByDevice = make(map[string]subscriptions.Subscription, len(push.subs))
			for _, s := range push.subs {
				subByDevice[s.AppID+"\x00"+s.DeviceID] = s
			}
		}
		s, ok := subByDevice[appID+"\x00"+deviceID]
		return s, ok
	}
	var (
		removals   []removal
		rejected   map[string][]relayproto.Recipient // by notification id
		reasons    map[string]string
		retry      bool
		missing    bool
		backoff    time.Duration
		recipients int
		nRejected  int
		nGone      int
	)
	for _, n := range push.notes {
		recipients += len(n.Recipients)
		nr, ok := resultFor(r.results, n.ID)
		if !ok {
			missing = true
			continue
		}
		for _, dr := range nr.Devices {
			switch dr.Status {
			case relayproto.DeviceGone:
				nGone++
				if sub, known := subOf(dr.AppID, dr.DeviceID); known {
					ref := subscriptions.DeviceRef(dr.AppID, dr.DeviceID)
					removals = append(removals, removal{key: sub.Key, status: "gone", reason: dr.Reason, ref: ref})
				}
			case relayproto.DeviceRejected:
				nRejected++
				ref := subscriptions.DeviceRef(dr.AppID, dr.DeviceID)
				if reasons == nil {
					reasons, rejected = map[string]string{}, map[string][]relayproto.Recipient{}
				}
				reasons[ref] = dr.Reason
				for _, rc := range n.Recipients {
					if rc.AppID == dr.AppID && rc.DeviceID == dr.DeviceID {
						rejected[n.ID] = append(rejected[n.ID], rc)
					}
				}
				if sub, known := subOf(dr.AppID, dr.DeviceID); known {
					removals = append(removals, removal{key: sub.Key, status: "rejected", reason: dr.Reason, ref: ref})
				}
			case relayproto.DeviceRetry:
				retry = true
				backoff = max(backoff, time.Duration(dr.BackOffTimeInMilliseconds)*time.Millisecond)
			}
		}
	}
	if retry || missing {
		rec.deviceRetries++
		if rec.deviceRetries <= w.d.cfg.MaxPushRetries {
			w.requeue(rec, msgs, now, "device_retry", min(backoff, relayproto.MaxBackOff))
			if len(removals) == 0 {
				return nil
			}
			return &settleTask{rec: rec, remove: removals}
		}
		reason, lastErr := ReasonDeviceRetries, "devices kept asking for a retry"
		if missing {
			reason, lastErr = ReasonMissingResponse, "the relay's answers did not include the notification"
		}
		w.co.Failed(now, rec.key, time.Time{})
		w.d.metrics.pushes.WithLabelValues("failed").Inc()
		rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
		return &settleTask{rec: rec, msgs: msgs, remove: removals, dead: w.deadLetters(rec, push.notes, msgs, reason, lastErr, nil, now)}
	}

	t := &settleTask{rec: rec, msgs: msgs, remove: removals}
	for _, n := range push.notes {
		if rc := rejected[n.ID]; len(rc) > 0 {
			dn := n
			dn.Recipients = rc
			t.dead = append(t.dead, w.deadLetters(rec, []relayproto.Notification{dn}, msgs, ReasonRejected, "the relay rejected the device", reasons, now)...)
		}
	}
	if nRejected == recipients {
		w.co.Failed(now, rec.key, time.Time{})
		w.d.metrics.pushes.WithLabelValues("failed").Inc()
	} else {
		first, last, earliest := span(msgs)
		rec.state, rec.dirty = rec.state.Pushed(push.count, push.seq, now), true
		w.co.Delivered(now, rec.key, push.count)
		w.d.metrics.pushes.WithLabelValues("sent").Inc()
		w.d.metrics.pushLatency.Observe(r.took.Seconds())
		rec2p := 0.0
		if !earliest.IsZero() {
			rec2p = now.Sub(earliest).Seconds()
			w.d.metrics.eventToPush.Observe(rec2p)
		}
		t.sent = &SentRecord{
			ID: push.notes[0].ID, BatchID: r.batchID, Tenant: rec.tenant, UserKey: rec.key,
			Count: push.count, Exact: push.exact, Previous: push.previous,
			FirstSeq: first, LastSeq: max(last, push.seq), Events: len(msgs),
			Devices: recipients, Gone: nGone, Rejected: nRejected, Attempts: rec.attempts,
			LatencyMS: float64(r.took.Microseconds()) / 1000, EventToPushMS: rec2p * 1000, SentAt: now.UTC(),
		}
	}
	rec.deviceRetries, rec.requeues, rec.attempts = 0, 0, 0
	return t
}

// resultFor finds the relay's result for notification id among results,
// which hold one push's few notifications.
func resultFor(results []relayproto.NotificationResult, id string) (relayproto.NotificationResult, bool) {
	for _, nr := range results {
		if nr.ID == id {
			return nr, true
		}
	}
	return relayproto.NotificationResult{}, false
}

// span returns the first and last sequence of msgs and the earliest event time.
func span(msgs []*held) (first, last uint64, earliest time.Time) {
	for _, h := range msgs {
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

func (w *worker) deadLetters(rec *userRec, notes []relayproto.Notification, msgs []*held, reason, lastErr string, deviceReasons map[string]string, now time.Time) []DeadLetter {
	seqs := make([]uint64, 0, len(msgs))
	for _, h := range msgs {
		seqs = append(seqs, h.seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	_, _, earliest := span(msgs)
	out := make([]DeadLetter, 0, len(notes))
	for _, n := range notes {
		out = append(out, DeadLetter{
			Tenant: rec.tenant, User: rec.user, UserKey: rec.key, Reason: reason,
			Attempts: rec.attempts, LastError: lastErr, Sequences: seqs, Notification: n,
			DeviceReasons: deviceReasons, FirstEventAt: earliest, DeadAt: now.UTC(),
		})
	}
	return out
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// settle runs the tasks' I/O in parallel, then acknowledges the events of
// those that succeeded. A task that failed puts its events back and asks
// the coalescer to come back to the user later.
func (w *worker) settle(ctx context.Context, tasks []*settleTask, now time.Time) {
	if len(tasks) == 0 {
		return
	}
	_ = parallel(w.d.cfg.IOConcurrency, len(tasks), func(i int) error {
		t := tasks[i]
		t.ok = w.persist(ctx, t)
		return nil
	})
	for _, t := range tasks {
		rec := t.rec
		if !t.ok {
			w.d.metrics.settleFailures.Inc()
			rec.pending = append(t.msgs, rec.pending...)
			if len(rec.pending) > 0 || rec.state.NeedsPush() {
				w.co.Observe(now, rec.key, coalesce.Update{Count: rec.state.Count, Change: coalesce.Decrease, Pushed: rec.state.LastPushedCount})
			}
			continue
		}
		// Metrics first: whoever sees the acks sees the metrics too.
		if len(t.msgs) > 0 {
			w.d.metrics.eventsPerPush.Observe(float64(len(t.msgs)))
			w.d.metrics.acked.Add(float64(len(t.msgs)))
		}
		if t.skip != "" {
			w.d.metrics.skipped.WithLabelValues(t.skip).Inc()
		}
		for _, h := range t.msgs {
			if err := h.msg.Ack(); err != nil {
				w.log.Debug().Err(err).Uint64("seq", h.seq).Msg("acknowledging")
			}
			w.forget(h)
		}
		if t.merged && rec.push == nil && len(rec.pending) == 0 && rec.state.NeedsPush() {
			w.co.Observe(now, rec.key, coalesce.Update{Count: rec.state.Count, Change: coalesce.Decrease, Pushed: rec.state.LastPushedCount})
		}
	}
}

// persist writes what a task records: dead letters first (they are the
// events' record once acknowledged), then the state, then the sent record
// and the removals, which are best effort.
func (w *worker) persist(ctx context.Context, t *settleTask) bool {
	for _, dl := range t.dead {
		data, err := json.Marshal(dl)
		if err != nil {
			w.log.Error().Err(err).Msg("encoding a dead letter")
			return false
		}
		if _, err := w.d.js.Publish(ctx, DeadSubject(t.rec.key), data); err != nil {
			w.log.Warn().Err(err).Msg("publishing a dead letter")
			return false
		}
		w.d.metrics.deadLetters.WithLabelValues(dl.Reason).Inc()
		w.log.Warn().Str("tenant", dl.Tenant).Str("user", dl.User).Str("reason", dl.Reason).Int("attempts", dl.Attempts).
			Str("last_error", dl.LastError).Int("events", len(dl.Sequences)).Msg("notification dead-lettered")
	}
	if t.rec.dirty {
		if err := w.writeState(ctx, t); err != nil {
			w.log.Warn().Err(err).Msg("writing unread state")
			return false
		}
	}
	if t.sent != nil {
		data, err := json.Marshal(t.sent)
		if err == nil {
			_, err = w.d.js.PublishMsgAsync(&nats.Msg{Subject: SentSubject(t.rec.key), Data: data})
		}
		if err != nil {
			w.log.Debug().Err(err).Msg("recording a sent push")
		}
	}
	for _, r := range t.remove {
		err := w.d.subs.DeleteKey(ctx, r.key)
		w.d.index.Forget(r.key)
		if err != nil && !errors.Is(err, subscriptions.ErrNotFound) {
			w.log.Warn().Err(err).Str("device", r.ref).Msg("removing a device subscription")
			continue
		}
		w.d.metrics.devicesRemoved.WithLabelValues(r.status).Inc()
		w.log.Info().Str("tenant", t.rec.tenant).Str("device", r.ref).Str("status", r.status).Str("reason", r.reason).
			Msg("device subscription removed on the relay's word")
	}
	return true
}

// writeState writes the user's state with a revision check. On a conflict
// (another writer: a dispatcher that lost the partition, an operator) it
// reads the stored state, applies on top of it the events this worker holds
// for the user, keeps the newer push record, and writes again.
func (w *worker) writeState(ctx context.Context, t *settleTask) error {
	rec := t.rec
	rev, err := w.d.unread.Put(ctx, rec.key, rec.state, rec.rev)
	if errors.Is(err, unread.ErrConflict) {
		w.d.metrics.stateConflicts.Inc()
		cur, curRev, gerr := w.d.unread.Get(ctx, rec.key)
		if gerr != nil {
			return gerr
		}
		all := append(append(append([]*held(nil), t.msgs...), rec.inflight...), rec.pending...)
		sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
		merged := cur
		for _, h := range all {
			// Held events were valid when they were applied; decode again
			// rather than keep every decoded event in memory.
			if e, err := decodeEvent(h.msg.Data()); err == nil {
				merged, _ = unread.Apply(merged, &e, h.seq, w.d.cfg.Unread)
			}
		}
		if rec.state.LastPushedAt.After(merged.LastPushedAt) {
			merged.LastPushedCount, merged.LastPushedAt, merged.LastPushedSeq = rec.state.LastPushedCount, rec.state.LastPushedAt, rec.state.LastPushedSeq
		}
		rec.state, rec.rev, t.merged = merged, curRev, true
		rev, err = w.d.unread.Put(ctx, rec.key, rec.state, rec.rev)
	}
	if err != nil {
		return err
	}
	rec.rev, rec.dirty = rev, false
	return nil
}

// keepAlive sends in-progress acks for events held long enough that the
// server might redeliver them.
func (w *worker) keepAlive() {
	now := time.Now()
	cutoff := now.Add(-w.d.cfg.AckWait / 3)
	w.eachHeld(func(h *held) {
		if h.touched.Before(cutoff) {
			if err := h.msg.InProgress(); err != nil {
				w.log.Debug().Err(err).Uint64("seq", h.seq).Msg("in-progress ack")
			}
			h.touched = now
		}
	})
	w.d.metrics.held.WithLabelValues(w.label).Set(float64(w.heldN.Load()))
}

// sweep forgets idle users: those with nothing held, nothing pending in the
// coalescer, and no event for CacheIdle (or at once when the cache is full).
func (w *worker) sweep(now time.Time) {
	full := len(w.users) > w.d.cfg.MaxCachedUsers
	cutoff := now.Add(-w.d.cfg.CacheIdle)
	for key, r := range w.users {
		if !r.idle() || (!full && r.lastActive.After(cutoff)) {
			continue
		}
		if _, busy := w.co.Inspect(key); busy {
			continue
		}
		delete(w.users, key)
	}
}

// unpin releases the pin if this worker still holds it.
func (w *worker) unpin(ctx context.Context) {
	if w.pin == "" || w.cons == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := w.cons.Info(cctx)
	if err != nil {
		return
	}
	for _, g := range info.PriorityGroups {
		if g.Group == w.d.cfg.PriorityGroup && g.PinnedClientID == w.pin {
			if err := w.d.streamHandle.UnpinConsumer(cctx, w.name, w.d.cfg.PriorityGroup); err != nil {
				w.log.Debug().Err(err).Msg("unpinning")
			}
		}
	}
}

// userKeyOf returns <tenant>.<user> of a stored subject mail.<p>.<tenant>.<user>:
// the subject's last two tokens, both non-empty, as a substring of it (no
// allocation per event).
func userKeyOf(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, events.SubjectPrefix+".")
	if !ok {
		return "", false
	}
	_, key, ok := strings.Cut(rest, ".") // after the partition token
	if !ok {
		return "", false
	}
	tenant, user, ok := strings.Cut(key, ".")
	if !ok || tenant == "" || user == "" || strings.IndexByte(user, '.') >= 0 {
		return "", false
	}
	return key, true
}

// consumerName is the durable consumer of a partition.
func consumerName(prefix string, partition int) string {
	return fmt.Sprintf("%s-p%d", prefix, partition)
}

// parallel runs f(0..n-1) on at most limit goroutines and joins the errors.
func parallel(limit, n int, f func(i int) error) error {
	if n == 0 {
		return nil
	}
	if n == 1 || limit <= 1 {
		var errs []error
		for i := range n {
			if err := f(i); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next atomic.Int64
	)
	for range min(limit, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
