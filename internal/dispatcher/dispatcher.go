// Package dispatcher is the heart of pushproxy: it consumes mailbox events
// from the MAIL stream, keeps each user's unread count, coalesces bursts
// into one push with the final count, sends pushes to the relay in batches
// with retries, records what was sent (PUSH_SENT) and what could not be
// delivered (PUSH_DEAD), and prunes devices the relay reports gone.
//
// Dispatchers scale out up to the number of partitions of the MAIL stream:
// each partition has one durable pull consumer with a pinned priority
// group, the live dispatchers share the partitions out among themselves
// (see Assign), and the pin makes sure one dispatcher at a time consumes a
// partition. DESIGN.md beside this file explains the choice and its limits.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// proxyState is the part of the proxy settings the dispatcher acts on.
type proxyState struct {
	enabled bool
	uri     string
	reason  string
}

// Dispatcher is a running dispatcher; create it with New and run it with Run.
type Dispatcher struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	keyer   *events.Keyer
	unread  *unread.Store
	subs    *subscriptions.Store
	devs    *subscriptions.Cache
	config  *settings.Store
	pub     Publisher
	sender  *sender
	metrics *metrics
	reg     *prometheus.Registry
	log     zerolog.Logger

	stream       string
	streamHandle jetstream.Stream
	partitions   int

	proxyNow atomic.Pointer[proxyState]
	running  atomic.Bool
	// members is Run's view of the live dispatchers; beacon confirms it
	// with the cluster's majority.
	members *membership
	beacon  *beacon

	relayCheckedAt atomic.Int64
	relayWasUp     atomic.Bool

	// cacheCtx keeps the device cache's watch alive until Run ends
	// (or New's context does).
	cacheCtx    context.Context
	cacheCancel context.CancelFunc
}

// Run creates a dispatcher and runs it until ctx ends; see New and
// (*Dispatcher).Run. Like every daemon's Run, it takes its configuration,
// the NATS connection, the log and the metrics registry.
func Run(ctx context.Context, cfg Config, conn *broker.Conn, log zerolog.Logger, reg *prometheus.Registry) error {
	d, err := New(ctx, cfg, conn, log, reg)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// New checks cfg, opens the stores, creates (or updates) the partition
// consumers and loads the device subscriptions. The connection must reach a
// provisioned JetStream (see broker.Provision). reg receives the metrics
// (a private registry when nil).
func New(ctx context.Context, cfg Config, conn *broker.Conn, log zerolog.Logger, reg *prometheus.Registry) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if cfg.InstanceID == "" {
		host, _ := os.Hostname()
		cfg.InstanceID = strings.Trim(host+"-"+uuid.NewString()[:8], "-")
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var gate func() error // the sender's writeGate, once it exists
	pub := cfg.Publisher
	if pub == nil {
		rc := cfg.Relay
		if cfg.Tokens != nil {
			rc.Tokens = cfg.Tokens
		}
		rc.WriteGate = func() error { return gate() }
		pub = relayclient.New(rc)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg: cfg, nc: conn.NC, js: conn.JS, pub: pub, stream: broker.StreamMail,
		metrics: m, reg: reg,
		log: log.With().Str("component", "dispatcher").Str("instance", cfg.InstanceID).Logger(),
	}
	if d.keyer, err = broker.Keyer(ctx, conn.JS); err != nil {
		return nil, err
	}
	if d.unread, err = unread.Open(ctx, conn.JS); err != nil {
		return nil, err
	}
	if d.subs, err = subscriptions.Open(ctx, conn.JS, d.keyer); err != nil {
		return nil, err
	}
	if d.config, err = settings.Open(ctx, conn.JS); err != nil {
		return nil, err
	}
	if d.beacon, err = openBeacon(ctx, conn.JS, cfg.InstanceID); err != nil {
		return nil, err
	}
	if d.streamHandle, err = conn.JS.Stream(ctx, d.stream); err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", d.stream, err)
	}
	info, err := d.streamHandle.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", d.stream, err)
	}
	if d.partitions, err = partitionsOf(info.Config); err != nil {
		return nil, err
	}
	if err := d.ensureConsumers(ctx); err != nil {
		return nil, err
	}
	d.readSettings(ctx)
	d.cacheCtx, d.cacheCancel = context.WithCancel(ctx)
	if d.devs, err = d.subs.Cache(d.cacheCtx, cfg.DeviceCacheUsers); err != nil {
		d.cacheCancel()
		return nil, err
	}
	d.sender = newSender(pub, cfg, d.proxy, d.metrics, d.log)
	gate = d.sender.writeGate
	d.observeRelay()
	return d, nil
}

// consumerCreateTimeout bounds how long New retries creating a partition's
// consumer before it gives up.
const consumerCreateTimeout = 2 * time.Minute

// partitionRE finds the partition count in the MAIL stream's transform.
var partitionRE = regexp.MustCompile(`\{\{\s*partition\(\s*(\d+)\s*,`)

// partitionsOf reads the number of partitions from the stream's subject
// transform ({{partition(n,...)}}).
func partitionsOf(cfg jetstream.StreamConfig) (int, error) {
	if cfg.SubjectTransform == nil {
		return 0, fmt.Errorf("stream %s has no partitioning subject transform: provision it with broker.Provision", cfg.Name)
	}
	m := partitionRE.FindStringSubmatch(cfg.SubjectTransform.Destination)
	if m == nil {
		return 0, fmt.Errorf("stream %s's subject transform %q has no {{partition(n,...)}}", cfg.Name, cfg.SubjectTransform.Destination)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n < 1 {
		return 0, fmt.Errorf("stream %s has an invalid partition count %q", cfg.Name, m[1])
	}
	return n, nil
}

// consumerConfig is the durable consumer of one partition.
func (d *Dispatcher) consumerConfig(p int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        consumerName(d.cfg.ConsumerPrefix, p),
		Description:    fmt.Sprintf("pushproxy dispatcher, partition %d of %d", p, d.partitions),
		FilterSubject:  broker.PartitionFilter(p),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        d.cfg.AckWait,
		MaxDeliver:     d.cfg.MaxDeliver,
		MaxAckPending:  d.cfg.MaxAckPending,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{d.cfg.PriorityGroup},
		PinnedTTL:      d.cfg.PinnedTTL,
	}
}

// ensureConsumers creates or updates the consumer of every partition, and
// warns about consumers of partitions beyond the current count (left from a
// larger partition count) that still hold events.
func (d *Dispatcher) ensureConsumers(ctx context.Context) error {
	for p := range d.partitions {
		// A cluster that is electing leaders or busy may time out: retry
		// for a while rather than exit (seen when three servers and the
		// daemons start together on a small machine).
		policy := backoff.WithContext(backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
			backoff.WithMaxElapsedTime(consumerCreateTimeout)), ctx)
		err := backoff.RetryNotify(func() error {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := d.js.CreateOrUpdateConsumer(cctx, d.stream, d.consumerConfig(p))
			return err
		}, policy, func(err error, wait time.Duration) {
			d.log.Warn().Err(err).Str("consumer", consumerName(d.cfg.ConsumerPrefix, p)).Dur("retry_in", wait).Msg("creating the partition's consumer; retrying")
		})
		if err != nil {
			return fmt.Errorf("creating consumer %s: %w", consumerName(d.cfg.ConsumerPrefix, p), err)
		}
	}
	lister := d.streamHandle.ListConsumers(ctx)
	prefix := d.cfg.ConsumerPrefix + "-p"
	for info := range lister.Info() {
		n, err := strconv.Atoi(strings.TrimPrefix(info.Name, prefix))
		if !strings.HasPrefix(info.Name, prefix) || err != nil || n < d.partitions {
			continue
		}
		if info.NumPending > 0 || info.NumAckPending > 0 {
			d.log.Warn().Str("consumer", info.Name).Uint64("pending", info.NumPending).Int("ack_pending", info.NumAckPending).
				Msg("a consumer of a partition that no longer exists still holds events; drain it or delete it (see DESIGN.md)")
		}
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		d.log.Debug().Err(err).Msg("listing consumers")
	}
	return nil
}

// Partitions is the number of partitions of the MAIL stream.
func (d *Dispatcher) Partitions() int { return d.partitions }

// InstanceID is this dispatcher's name among the others.
func (d *Dispatcher) InstanceID() string { return d.cfg.InstanceID }

// Ready reports nil while Run is consuming.
func (d *Dispatcher) Ready(ctx context.Context) error {
	if !d.running.Load() {
		return errors.New("dispatcher not running")
	}
	if d.nc.IsClosed() || !d.nc.IsConnected() {
		return errors.New("dispatcher not connected to NATS")
	}
	return nil
}

func (d *Dispatcher) proxy() proxyState {
	if p := d.proxyNow.Load(); p != nil {
		return *p
	}
	return proxyState{reason: "proxy settings not read yet"}
}

// readSettings reads the proxy settings and logs a change of whether
// pushes go out.
func (d *Dispatcher) readSettings(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p, err := d.config.Proxy(cctx)
	if err != nil {
		d.log.Warn().Err(err).Msg("reading proxy settings; keeping the previous ones")
		return
	}
	next := proxyState{enabled: p.Enabled && p.Organization != "", uri: p.URI}
	switch {
	case !p.Enabled:
		next.reason = "the push notification proxy is disabled (pushctl proxy enable --organization <domain>)"
	case p.Organization == "":
		next.reason = "the push notification proxy has no organization (pushctl proxy enable --organization <domain>)"
	}
	prev := d.proxyNow.Swap(&next)
	if prev == nil || prev.enabled != next.enabled || prev.uri != next.uri {
		if next.enabled {
			d.log.Info().Str("uri", next.uri).Str("organization", p.Organization).Msg("push notification proxy enabled: pushing badges")
		} else {
			d.log.Warn().Str("reason", next.reason).Msg("push notification proxy not enabled: counting unread mail, pushing nothing")
		}
	}
	if next.enabled {
		d.metrics.proxyDisabled.Set(0)
	} else {
		d.metrics.proxyDisabled.Set(1)
	}
}

// relayCheckEvery bounds how often relayUp asks the relay client.
const relayCheckEvery = 10 * time.Millisecond

// relayUp reports whether the relay takes requests: the breaker is closed
// (a half-open breaker's single trial does not count as up), or, for a
// publisher that does not say, whether it calls itself healthy. The answer
// is cached briefly: the fetch gate asks for every event.
func (d *Dispatcher) relayUp() bool {
	now := time.Now().UnixNano()
	if last := d.relayCheckedAt.Load(); now-last < int64(relayCheckEvery) {
		return d.relayWasUp.Load()
	}
	up := d.pub.Healthy()
	if bs, ok := d.pub.(breakerStater); ok {
		up = bs.State() == relayclient.BreakerClosed
	}
	d.relayWasUp.Store(up)
	d.relayCheckedAt.Store(now)
	return up
}

// devices returns the subscriptions of a user that want mail badges.
func (d *Dispatcher) devices(ctx context.Context, userKey string) ([]subscriptions.Subscription, error) {
	all, err := d.devs.ForUser(ctx, userKey)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		if s.Options == 0 || s.Options.Has(subscriptions.OptionEmail) || s.Options.Has(subscriptions.OptionBackgroundSync) {
			out = append(out, s)
		}
	}
	return out, nil
}

// Run consumes until ctx ends, then hands its partitions over: it stops
// fetching, flushes the pushes that are pending, waits up to
// ShutdownTimeout for those in flight, and leaves anything unsettled
// unacknowledged for the next owner. It returns nil after a shutdown.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("dispatcher already running")
	}
	defer d.running.Store(false)
	defer d.cacheCancel()

	ioCtx, cancelIO := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelIO()
	members := newMembership(d.nc, d.cfg.MembershipSubject, d.cfg.InstanceID, d.cfg.Heartbeat, d.log)
	members.beacon = d.beacon.send
	d.members = members
	d.sender.view = members.current
	senderCtx, stopSender := context.WithCancel(ioCtx)
	senderDone := make(chan struct{})
	go func() { defer close(senderDone); d.sender.run(senderCtx) }()

	if err := members.start(); err != nil {
		stopSender()
		<-senderDone
		return err
	}
	beatCtx, stopBeats := context.WithCancel(ioCtx)
	beatsDone := make(chan struct{})
	confirmsDone := make(chan struct{})
	go func() { defer close(beatsDone); members.beat(beatCtx) }()
	go func() { defer close(confirmsDone); members.confirm(beatCtx) }()
	d.log.Info().Int("partitions", d.partitions).Msg("dispatcher started")

	workers := map[int]*worker{}
	exited := make(chan *worker, d.partitions*2+1)
	restart := map[int]time.Time{}
	// announce tells the others which partitions have a worker here.
	announce := func() {
		running := make([]int, 0, len(workers))
		for p := range workers {
			running = append(running, p)
		}
		slices.Sort(running)
		members.setOwned(running)
	}
	start := func(p int) {
		epoch, _ := members.current()
		w := d.newWorker(p, epoch)
		workers[p] = w
		go func() {
			w.run(ioCtx)
			exited <- w
		}()
	}
	reassign := func() {
		mine := owned(Assign(d.partitions, members.members()), d.cfg.InstanceID)
		want := map[int]bool{}
		for _, p := range mine {
			want[p] = true
			if workers[p] == nil && restart[p].IsZero() {
				start(p)
			}
		}
		for p, w := range workers {
			if !want[p] {
				w.requestStop()
			}
		}
		announce()
		d.metrics.partitions.Set(float64(len(mine)))
		d.metrics.members.Set(float64(len(members.members())))
	}

	// Settings and consumer metrics are read beside the loop: their
	// requests block for seconds while NATS comes back, and the loop must
	// go on reacting to membership changes meanwhile.
	background, stopBackground := context.WithCancel(ioCtx)
	var backgroundDone sync.WaitGroup
	backgroundDone.Go(func() { service.Every(background, d.cfg.SettingsInterval, func() { d.readSettings(background) }) })
	observeReq := make(chan []int, 1)
	backgroundDone.Go(func() {
		for {
			select {
			case <-background.Done():
				return
			case parts := <-observeReq:
				d.observe(background, parts)
			}
		}
	})
	defer func() {
		stopBackground()
		backgroundDone.Wait()
	}()
	metricsTick := time.NewTicker(d.cfg.MetricsInterval)
	defer metricsTick.Stop()
	restartTick := time.NewTicker(time.Second)
	defer restartTick.Stop()
	// Give the others one heartbeat to answer before taking partitions.
	firstAssign := time.NewTimer(d.cfg.Heartbeat)
	defer firstAssign.Stop()
	assigned := false

loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-firstAssign.C:
			assigned = true
			reassign()
		case <-members.changed:
			if assigned {
				reassign()
			}
		case <-members.gaps:
			// This dispatcher did not hear itself for longer than the
			// others wait before taking its partitions: it was stopped,
			// starved of CPU or cut off from NATS. Its workers' state is
			// from before and may be older than a new owner's pushes: drop
			// it unpushed and start again from the stream (the sender
			// already holds their pushes, see sender.send).
			d.log.Warn().Int("partitions", len(workers)).Msg("this dispatcher was not heard for a while: dropping its partitions' state; they are read again from the stream")
			d.metrics.stalls.Inc()
			for _, w := range workers {
				w.requestDrop()
			}
		case <-metricsTick.C:
			parts := slices.Collect(maps.Keys(workers))
			select {
			case observeReq <- parts:
			default: // the last reading is still going on
			}
		case w := <-exited:
			if workers[w.partition] == w {
				delete(workers, w.partition)
				announce()
				select {
				case <-w.stop:
					// Handed over on purpose; take it again if reassigned.
					if assigned {
						reassign()
					}
				default:
					d.log.Warn().Int("partition", w.partition).Msg("partition consumer stopped; retrying shortly")
					restart[w.partition] = time.Now().Add(time.Second)
				}
			}
		case now := <-restartTick.C:
			for p, at := range restart {
				if now.After(at) {
					delete(restart, p)
				}
			}
			if assigned {
				reassign()
			}
		}
	}

	d.log.Info().Int("partitions", len(workers)).Msg("dispatcher stopping: handing partitions over")
	for _, w := range workers {
		w.requestStop()
	}
	for _, w := range workers {
		<-w.done
	}
	stopBeats()
	<-beatsDone
	<-confirmsDone
	members.leave()
	stopSender()
	<-senderDone
	d.metrics.partitions.Set(0)
	d.log.Info().Msg("dispatcher stopped")
	return nil
}

// confirmed records a write the cluster confirmed, sent at sent, in Run's
// membership (a beacon without the beacon's own write).
func (d *Dispatcher) confirmed(sent time.Time) {
	if m := d.members; m != nil {
		m.confirmed(sent)
	}
}

// claimedByOther reports whether another live dispatcher announces a
// worker for partition p.
//
// Until this dispatcher's view of the others is stable (just started, or
// NATS just came back), every partition counts as claimed: an unannounced
// partition then may well belong to a live dispatcher whose heartbeats have
// not arrived yet, and taking its pin would let two dispatchers apply the
// partition at once.
func (d *Dispatcher) claimedByOther(p int) bool {
	return d.members != nil && (!d.members.stable() || d.members.claimedByOther(p))
}

// observe feeds the gauges that come from the server and the relay client.
func (d *Dispatcher) observe(ctx context.Context, partitions []int) {
	for _, p := range partitions {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cons, err := d.js.Consumer(cctx, d.stream, consumerName(d.cfg.ConsumerPrefix, p))
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = cons.Info(cctx); err == nil {
				label := strconv.Itoa(p)
				d.metrics.pending.WithLabelValues(label).Set(float64(info.NumPending))
				d.metrics.ackPending.WithLabelValues(label).Set(float64(info.NumAckPending))
			}
		}
		cancel()
	}
	d.observeRelay()
	subs, users := d.devs.Len()
	d.metrics.subscriptionsIx.Set(float64(subs))
	d.metrics.cachedUsers.Set(float64(users))
}

// observeRelay feeds the relay client's gauges.
func (d *Dispatcher) observeRelay() {
	if bs, ok := d.pub.(breakerStater); ok {
		d.metrics.breakerState.Set(float64(bs.State()))
	}
	if d.relayUp() {
		d.metrics.relayHealthy.Set(1)
	} else {
		d.metrics.relayHealthy.Set(0)
	}
}
