package dispatcher

import (
	"github.com/pushproxy/pushproxy/internal/service"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's Prometheus collectors (pushproxy_dispatcher_*).
type metrics struct {
	events           *prometheus.CounterVec
	applied          prometheus.Counter
	alreadyApplied   prometheus.Counter
	invalid          prometheus.Counter
	redelivered      prometheus.Counter
	acked            prometheus.Counter
	pushes           *prometheus.CounterVec
	skipped          *prometheus.CounterVec
	eventsPerPush    prometheus.Histogram
	pushLatency      prometheus.Histogram
	eventToPush      prometheus.Histogram
	eventAge         prometheus.Histogram
	eventsAhead      prometheus.Counter
	retries          prometheus.Counter
	requeued         *prometheus.CounterVec
	deadLetters      *prometheus.CounterVec
	devicesRemoved   *prometheus.CounterVec
	requests         *prometheus.CounterVec
	stalls           prometheus.Counter
	pending          *prometheus.GaugeVec
	ackPending       *prometheus.GaugeVec
	held             *prometheus.GaugeVec
	partitions       prometheus.Gauge
	members          prometheus.Gauge
	breakerState     prometheus.Gauge
	relayHealthy     prometheus.Gauge
	proxyDisabled    prometheus.Gauge
	takeovers        prometheus.Counter
	takeoverRead     prometheus.Counter
	takeoverTime     prometheus.Histogram
	stateConflicts   prometheus.Counter
	missedDeliveries prometheus.Counter
	gapEvents        prometheus.Counter
	gapLeaderReads   prometheus.Counter
	gapStaleStates   prometheus.Counter
	settleFailures   prometheus.Counter
	subscriptionsIx  prometheus.Gauge
	cachedUsers      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "pushproxy", "dispatcher"
	// Finer around the default coalescing window (300 ms) and its latency
	// goal (the window + 50 ms): a push held for the window and one sent
	// 100 ms after it fall into different buckets, so a dashboard's p99
	// says which. Fixed, not derived from --window: every dispatcher's
	// buckets must match for their sum to make a quantile.
	latency := []float64{.005, .01, .025, .05, .1, .2, .25, .3, .35, .4, .5, .75, 1, 2.5, 5, 10, 30, 60, 120, 300}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_consumed_total",
			Help: "Mail events consumed, by result: applied, already_applied (a redelivery of an event in the state), invalid (terminated)."}, []string{"result"}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_acked_total",
			Help: "Events acknowledged after the push covering them was sent, skipped or dead-lettered."}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_redelivered_total",
			Help: "Events the server delivered more than once (after a dispatcher died or an ack was lost)."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pushes_total",
			Help: "Pushes by result: sent (the relay accepted them), failed (dead-lettered), requeued (tried again later)."}, []string{"result"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pushes_skipped_total",
			Help: "Pushes not sent, by reason: unchanged (the devices show the count), no_subscriptions, proxy_disabled; held and app_paused count the events before the latest of a user whose push waits for the relay or a paused app, acknowledged with the state written."}, []string{"reason"}),
		eventsPerPush: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "events_per_push",
			Help:    "Events covered by one push or skip: the coalescing ratio.",
			Buckets: []float64{1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000}}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "push_duration_seconds",
			Help: "Time from sending a push to the relay's answer, retries included.", Buckets: latency}),
		eventToPush: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "event_to_push_seconds",
			Help: "Time from the earliest event a push covers (received by ingest, or occurred) to the relay's acceptance.", Buckets: latency}),
		eventAge: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "event_age_seconds",
			Help: "Time from ingest receiving an event to this dispatcher reading it (by the clocks of both hosts): the wait in ingest, the stream and the fetch, or across a takeover, which the coalescing window of new mail absorbs up to three quarters of the window. With event_to_push_seconds, it tells a slow pipeline before the dispatcher from a slow relay.", Buckets: latency}),
		eventsAhead: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_received_ahead_total",
			Help: "Events whose receipt time (ingest's clock) was more than a second ahead of this dispatcher's clock when it read them: the clocks of ingest's and this dispatcher's hosts disagree. Event ages and event-to-push latencies are then off by as much, and new mail waits its whole coalescing window from the read."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "relay_retries_total",
			Help: "Relay requests retried after a temporary failure."}),
		requeued: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pushes_requeued_total",
			Help: "Pushes put back to be tried later, by reason: relay_unavailable, unauthorized, device_retry, shutdown, store."}, []string{"reason"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dead_letters_total",
			Help: "Notifications published to PUSH_DEAD, by reason."}, []string{"reason"}),
		devicesRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "devices_removed_total",
			Help: "Device subscriptions removed on the relay's word, by status: gone, rejected."}, []string{"status"}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "stalls_total",
			Help: "Gaps in this dispatcher's own heartbeats long enough for the others to take its partitions (it was stopped, starved of CPU or cut off from NATS): each time its partitions' state was dropped unpushed and read again from the stream."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "relay_requests_total",
			Help: "Relay publish calls (each possibly retried), by result: ok, relay_unavailable, unauthorized, shutdown, failed (dead-lettered), stalled (not made: this dispatcher was not heard by the others for a while, so its pushes from before are held and its partitions read again)."}, []string{"result"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "pending_events",
			Help: "Events of a partition not yet delivered to a dispatcher (consumer info), for the partitions this dispatcher owns."}, []string{"partition"}),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "ack_pending_events",
			Help: "Events of a partition delivered and not yet acknowledged (consumer info)."}, []string{"partition"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "held_events",
			Help: "Events this dispatcher holds per partition, waiting for their push."}, []string{"partition"}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "partitions_owned",
			Help: "Partitions this dispatcher consumes."}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "members",
			Help: "Dispatchers this one sees, itself included."}),
		breakerState: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "breaker_state",
			Help: "The relay client's circuit breaker: 0 closed, 1 open, 2 half-open."}),
		relayHealthy: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "relay_healthy",
			Help: "1 while the relay client takes requests, 0 while its circuit breaker holds them back."}),
		proxyDisabled: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "proxy_disabled",
			Help: "1 while the push notification proxy is disabled or has no organization: counts are kept, nothing is pushed."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partition_takeovers_total",
			Help: "Times this dispatcher started consuming a partition (or was pinned to it anew)."}),
		takeoverRead: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "takeover_events_read_total",
			Help: "Unacknowledged events a taking-over dispatcher read straight from the stream (left by a dispatcher that died or handed over unsettled)."}),
		takeoverTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "takeover_seconds",
			Help: "Time from starting to consume a partition (or being pinned anew) to applying its events.", Buckets: latency}),
		stateConflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "state_conflicts_total",
			Help: "Unread state writes that found another writer's change and were merged."}),
		missedDeliveries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "missed_deliveries_total",
			Help: "Gaps in a partition consumer's delivery sequence (a delivery lost on the way or sent to another dispatcher); each makes the worker catch up from the stream before applying more."}),
		gapEvents: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "gap_events_read_total",
			Help: "Events of a user the partition's consumer did not hand over before a later one, found by checking the user's state (confirmed with the unread bucket's leader) against the stream and applied first; any is a fault of the consumer's bookkeeping worth a look."}),
		gapLeaderReads: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "gap_leader_reads_total",
			Help: "Checks of a user's state against the stream that the nearest replica answered with no event (a replica behind, or events the stream's limits removed) and that were asked again of the MAIL stream's leader."}),
		gapStaleStates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "gap_stale_states_total",
			Help: "Users whose state, read from the nearest replica of the unread bucket, was older than the one its leader holds (a replica catching up), found when checking the state against the stream; the leader's state replaced it."}),
		settleFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "settle_failures_total",
			Help: "Times the state, the sent record or a dead letter could not be written; the push is tried again."}),
		subscriptionsIx: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "subscriptions",
			Help: "Device subscriptions held in this dispatcher's cache."}),
		cachedUsers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "cached_users",
			Help: "Users whose devices this dispatcher holds in memory (at most --device-cache-users, beyond it while reads are in flight)."}),
	}
	m.applied = m.events.WithLabelValues("applied")
	m.alreadyApplied = m.events.WithLabelValues("already_applied")
	m.invalid = m.events.WithLabelValues("invalid")
	err := service.Register(reg, "dispatcher", m.events, m.redelivered, m.acked, m.pushes, m.skipped, m.eventsPerPush, m.pushLatency, m.eventToPush, m.eventAge, m.eventsAhead, m.retries,
		m.requeued, m.deadLetters, m.devicesRemoved, m.requests, m.stalls, m.pending, m.ackPending, m.held, m.partitions,
		m.members, m.breakerState, m.relayHealthy, m.proxyDisabled, m.takeovers, m.takeoverRead, m.takeoverTime, m.stateConflicts, m.missedDeliveries, m.gapEvents, m.gapLeaderReads, m.gapStaleStates, m.settleFailures,
		m.subscriptionsIx, m.cachedUsers)
	return m, err
}
