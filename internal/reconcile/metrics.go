package reconcile

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/service"
)

// metrics are the reconciler's Prometheus collectors (pushproxy_reconcile_*).
type metrics struct {
	checks    *prometheus.CounterVec
	drift     *prometheus.CounterVec
	driftSize *prometheus.HistogramVec
	queued    prometheus.Gauge
	dropped   prometheus.Counter
	sweepDone prometheus.Gauge
	sweepUser prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "pushproxy", "reconcile"
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "checks_total",
			Help: "Users checked against their mail system, by trigger (estimated, sweep, request), counter and outcome (match, confirmed, corrected, behind, raced, not_served, skipped, error)."},
			[]string{"trigger", "counter", "outcome"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "drift_total",
			Help: "Badges found wrong and corrected, by trigger and counter: how often a badge drifted from the mailbox."},
			[]string{"trigger", "counter"}),
		driftSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "drift_size",
			Help:    "How far a corrected badge was from the truth (absolute difference of counts).",
			Buckets: []float64{1, 2, 3, 5, 10, 20, 50, 100, 1000}}, []string{"counter"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queued_users",
			Help: "Users whose estimated count waits for its check."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dropped_total",
			Help: "Estimated checks not queued (queue full) or given up (still behind or raced after several tries); the sweep checks those users later."}),
		sweepDone: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sweep_last_completed_timestamp_seconds",
			Help: "When the last sweep over every user with a subscription ended (Unix time)."}),
		sweepUser: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sweep_users",
			Help: "Users in the current sweep."}),
	}
	if err := service.Register(reg, "reconcile", m.checks, m.drift, m.driftSize, m.queued, m.dropped, m.sweepDone, m.sweepUser); err != nil {
		return nil, err
	}
	return m, nil
}

// observe counts one result.
func (m *metrics) observe(t Trigger, res Result) {
	counter := res.Counter
	if counter == "" {
		counter = "none"
	}
	m.checks.WithLabelValues(string(t), counter, string(res.Outcome)).Inc()
	if res.Outcome == Corrected {
		m.drift.WithLabelValues(string(t), counter).Inc()
		d := res.Truth - res.Badge
		m.driftSize.WithLabelValues(counter).Observe(float64(max(d, -d)))
	}
}
