package dispatcher

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/dispatcher/badges"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// pinHeader is the header the server sets on messages of a pinned
// priority-group consumer.
const pinHeader = "Nats-Pin-Id"

// syncCheckInterval bounds how often a syncing partition tries again to
// catch up after a failed attempt.
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
// It keeps what it needs of the library's message, not the message: its
// parsed headers and wrappers took about 3 KB an event, and a partition
// holds up to MaxAckPending events (see received in ack.go).
type held struct {
	received
	seq  uint64
	user *user
	// at is when ingest received the event (or when it occurred), for the
	// event-to-push latency.
	at time.Time
	// touched is the last delivery or in-progress ack.
	touched time.Time
	// released: acknowledged, terminated or given up; no longer counted.
	released bool
	// gap: read from the stream by a user's check (gaps.go), the
	// partition's consumer having skipped it.
	gap bool
}

// Seq is the event's stream sequence.
func (h *held) Seq() uint64 { return h.seq }

// Time is when ingest received the event (or when it occurred).
func (h *held) Time() time.Time { return h.at }

// user is what a partition knows of one user (package badges).
type user = badges.User[*held]

// settleTask is the I/O that ends a push (or a skip): dead letters, the
// state, the sent record; then its events are acknowledged. The loop sets
// what to write and reads the outcome once the task is back (finish); the
// task's goroutine does the I/O in between.
type settleTask struct {
	*badges.Settle[*held]
	sent *SentRecord
	// dead are the dead letters not yet published.
	dead []DeadLetter
	// write is the state to write (nil: unchanged); rebased says it was
	// merged with another writer's once already.
	write   *badges.Write
	rebased bool

	// The outcome: ok with the revision written, or the state of another
	// writer met on the way (conflict), or neither (failed).
	ok       bool
	rev      uint64
	conflict *unread.Loaded
}

// partitionEnv is what a partition's worker uses of its dispatcher: the
// connection and stores, the sender, the metrics, and what it asks of the
// dispatcher (proxy settings, a user's devices, the relay's health,
// whether another dispatcher claims a partition). Workers hold this, not
// the Dispatcher.
type partitionEnv struct {
	cfg          Config
	nc           *nats.Conn
	js           jetstream.JetStream
	stream       string
	streamHandle jetstream.Stream
	keyer        *events.Keyer
	unread       *unread.Store
	devs         *subscriptions.Cache
	metrics      *metrics
	// submit hands a push to the sender; deliverer is the delivery path
	// that applies the relay's answers.
	submit    func(*job)
	deliverer func() *delivery.Deliverer

	proxy          func() proxyState
	devices        func(ctx context.Context, userKey string) ([]subscriptions.Subscription, error)
	relayUp        func() bool
	claimedByOther func(partition int) bool
	// confirmed tells the membership that a state write sent then was
	// stored: the cluster's majority confirmed it (membership.confirmed);
	// goneSince says whether the dispatcher may have been counted gone
	// since an epoch, when it may neither push nor write
	// (sender.goneSince).
	confirmed func(sent time.Time)
	goneSince func(epoch uint64) bool
}

// partitionEnv gives a worker what it needs of d.
func (d *Dispatcher) partitionEnv() *partitionEnv {
	return &partitionEnv{
		cfg: d.cfg, nc: d.nc, js: d.js, stream: d.stream, streamHandle: d.streamHandle,
		keyer: d.keyer, unread: d.unread, devs: d.devs, metrics: d.metrics,
		submit:    d.sender.submit,
		deliverer: func() *delivery.Deliverer { return d.sender.path.get(d) },
		proxy:     d.proxy, devices: d.devices, relayUp: d.relayUp, claimedByOther: d.claimedByOther,
		confirmed: d.confirmed, goneSince: d.sender.goneSince,
	}
}

// worker consumes one partition: it applies the events in stream order to
// its ledger of users (package badges, which decides what is pushed and
// when), hands pushes to the sender and settles their results. Everything
// but the fetch loop runs on one goroutine, so a user's events are applied
// one at a time, in order.
type worker struct {
	env       *partitionEnv
	partition int
	label     string
	name      string
	cons      jetstream.Consumer
	log       zerolog.Logger

	ledger    *badges.Ledger[*held]
	validator events.Validator
	ready     []*held
	// jobs are the pushes at the sender, by user key.
	jobs map[string]*job
	// writing is each user's settle task whose I/O runs; waiting, the
	// user's next ones, in order. toWrite takes tasks to the writers
	// (startWriters), settled brings them back.
	writing map[string]*settleTask
	waiting map[string][]*settleTask
	toWrite *queue[*settleTask]
	settled *queue[*settleTask]

	// syncing: this worker just became the partition's consumer and holds
	// its events until no other dispatcher's events are pending, so that a
	// takeover never applies a user's events out of order.
	syncing       bool
	syncBuf       []*held
	syncSeqs      map[uint64]*held
	lastSyncCheck time.Time
	// syncStarted is when the current takeover began, for the log.
	syncStarted time.Time
	// started is when the worker started consuming.
	started time.Time
	pin     string
	// idlePin is the pin the last claimPin found idle: events waiting,
	// none unacknowledged.
	idlePin string
	// era counts the worker's catch-ups; a user's first event applied in
	// an era is checked against the stream (gaps.go).
	era uint64
	// lastDelivery is the consumer sequence of the last delivery received;
	// caughtUpTo, that of the last delivery the last catch-up covered.
	lastDelivery, caughtUpTo uint64

	// evs is apply's buffer of decoded events, reused between batches.
	evs []events.Event

	heldN    atomic.Int64
	draining atomic.Bool
	syncFlag atomic.Bool
	// epoch is the dispatcher's membership epoch when the worker started
	// (membership.current); dropped says it stops without handing over.
	epoch   uint64
	dropped atomic.Bool

	inbox   *queue[jetstream.Msg]
	wake    chan struct{}
	quit    chan struct{}
	results *queue[result]
	stop    chan struct{}
	stopped sync.Once
	done    chan struct{}
}

func (d *Dispatcher) newWorker(partition int, epoch uint64) *worker {
	name := consumerName(d.cfg.ConsumerPrefix, partition)
	return &worker{
		epoch:     epoch,
		env:       d.partitionEnv(),
		partition: partition,
		label:     strconv.Itoa(partition),
		name:      name,
		log:       d.log.With().Int("partition", partition).Logger(),
		ledger:    badges.New[*held](d.cfg.ledgerPolicy()),
		jobs:      map[string]*job{},
		writing:   map[string]*settleTask{},
		waiting:   map[string][]*settleTask{},
		toWrite:   newQueue[*settleTask](),
		settled:   newQueue[*settleTask](),
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

// requestDrop asks the worker to stop without handing over: push nothing
// more, acknowledge nothing more, keep the pin. Another dispatcher may own
// the partition by now (see membership.heardSelf); what the worker held
// is delivered again, or read from the stream by the owner.
func (w *worker) requestDrop() {
	w.dropped.Store(true)
	w.requestStop()
}

// run consumes until stopped or until consuming fails; ctx bounds the I/O.
func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	defer close(w.quit)
	defer w.abandon()
	defer w.env.metrics.held.DeleteLabelValues(w.label)
	defer w.env.metrics.pending.DeleteLabelValues(w.label)
	defer w.env.metrics.ackPending.DeleteLabelValues(w.label)

	cons, err := w.env.js.Consumer(ctx, w.env.stream, w.name)
	if err != nil {
		w.log.Warn().Err(err).Str("consumer", w.name).Msg("cannot open the partition's consumer")
		return
	}
	w.cons = cons
	expiry := max(time.Second, w.env.cfg.PinnedTTL/2)
	cc, err := cons.Consume(w.deliver,
		jetstream.PullPriorityGroup(w.env.cfg.PriorityGroup),
		jetstream.PullMaxMessages(w.env.cfg.FetchBatch),
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
	w.startWriters(ctx)
	w.setSyncing(true)
	w.started = time.Now()
	w.syncStarted = w.started
	w.env.metrics.takeovers.Inc()
	w.log.Info().Msg("consuming partition")
	w.claimPin(ctx)

	keepAlive := time.NewTicker(max(w.env.cfg.AckWait/4, 50*time.Millisecond))
	defer keepAlive.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	// Until the first pinned delivery, look for a dead owner's pin.
	claim := time.NewTicker(w.env.cfg.Heartbeat)
	defer claim.Stop()
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
			w.receive(ctx, w.inbox.Take(w.env.cfg.FetchBatch))
		case <-w.results.C():
			w.handleResults(ctx, w.results.Take(0))
		case <-w.settled.C():
			w.finish(w.settled.Take(0))
		case <-timer.C:
		case <-keepAlive.C:
			w.keepAlive()
		case <-sweep.C:
			w.sweep(time.Now())
		case <-claim.C:
			if w.pin != "" {
				claim.Stop()
			}
			w.claimPin(ctx)
		}
		if w.syncing && len(w.syncBuf) > 0 {
			w.catchUp(ctx)
			w.apply(ctx, time.Now())
		}
		w.pushDue(ctx, false)
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
	if w.env.nc.IsClosed() {
		// The connection is gone: nothing can be acknowledged or recorded,
		// and pushing now could overtake the partition's next owner.
		w.log.Warn().Int64("events_held", w.heldN.Load()).Msg("connection closed; held events will be redelivered")
		return
	}
	if w.dropped.Load() {
		w.log.Warn().Int64("events_held", w.heldN.Load()).Msg("partition dropped without handing over; held events will be delivered again or read from the stream")
		return
	}
	deadline := time.NewTimer(w.env.cfg.ShutdownTimeout)
	defer deadline.Stop()
	w.draining.Store(true)
	w.signalWake()
	cc.Drain()
	for !fetchEnded {
		select {
		case <-cc.Closed():
			fetchEnded = true
		case <-w.inbox.C():
			w.receive(ctx, w.inbox.Take(w.env.cfg.FetchBatch))
		case <-deadline.C:
			cc.Stop()
			fetchEnded = true
		}
	}
	for w.inbox.Len() > 0 {
		w.receive(ctx, w.inbox.Take(w.env.cfg.FetchBatch))
	}
	for {
		if !w.syncing {
			w.pushDue(ctx, true)
		}
		if w.ledger.InFlight() == 0 && len(w.writing) == 0 {
			break
		}
		select {
		case <-w.results.C():
			w.handleResults(ctx, w.results.Take(0))
		case <-w.settled.C():
			w.finish(w.settled.Take(0))
		case <-keepAlive.C:
			w.keepAlive()
		case <-deadline.C:
			w.log.Warn().Int("pushes_in_flight", w.ledger.InFlight()).Int("users_writing", len(w.writing)).Int64("events_held", w.heldN.Load()).
				Msg("hand-over timed out; unsettled events will be redelivered")
			return
		}
	}
	w.unpin(ctx)
	w.log.Info().Int64("events_left", w.heldN.Load()).Str("pin", w.pin).Msg("released partition")
}

// abandon marks the pushes not yet answered so the sender drops those it
// has not sent.
func (w *worker) abandon() {
	for _, j := range w.jobs {
		j.abandoned.Store(true)
	}
}

func (w *worker) mayFetch() bool {
	if w.draining.Load() || w.syncFlag.Load() {
		return true
	}
	n := w.heldN.Load()
	if n >= int64(w.env.cfg.MaxAckPending) {
		return false
	}
	return n < int64(w.env.cfg.BreakerHold) || w.env.relayUp()
}

func (w *worker) signalWake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) armTimer(t *time.Timer) {
	now := time.Now()
	next, ok := w.ledger.NextDeadline()
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

// keepAlive sends in-progress acks for events held long enough that the
// server might redeliver them.
func (w *worker) keepAlive() {
	now := time.Now()
	cutoff := now.Add(-w.env.cfg.AckWait / 3)
	w.eachHeld(func(h *held) {
		if h.touched.Before(cutoff) {
			if err := w.inProgress(h.received); err != nil {
				w.log.Debug().Err(err).Uint64("seq", h.seq).Msg("in-progress ack")
			}
			h.touched = now
		}
	})
	w.env.metrics.held.WithLabelValues(w.label).Set(float64(w.heldN.Load()))
}

// sweep forgets idle users: those with nothing held, nothing pending in the
// coalescer, and no event for CacheIdle (or at once when the cache is full).
func (w *worker) sweep(now time.Time) {
	w.ledger.Sweep(now.Add(-w.env.cfg.CacheIdle), w.ledger.Len() > w.env.cfg.MaxCachedUsers)
}

// unpin releases the pin if this worker still holds it. It reads the
// consumer's info first, even when the worker never learnt a pin: the
// server answers it by dropping the pull requests nobody listens to any
// more, this worker's among them (its subscription is closed by now).
// Left waiting, such a request could be the first the server finds when
// it pins the consumer anew, and it pins that request before it sees that
// nobody listens: the pin would then belong to nobody, and the
// partition's next owner would get nothing until it finds the pin
// abandoned (claimPin) or the pin's TTL ends.
func (w *worker) unpin(ctx context.Context) {
	if w.cons == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := w.cons.Info(cctx)
	if err != nil || w.pin == "" {
		return
	}
	for _, g := range info.PriorityGroups {
		if g.Group == w.env.cfg.PriorityGroup && g.PinnedClientID == w.pin {
			if err := w.env.streamHandle.UnpinConsumer(cctx, w.name, w.env.cfg.PriorityGroup); err != nil {
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
