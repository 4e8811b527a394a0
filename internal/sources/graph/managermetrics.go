package graph

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/service"
)

// Operations on subscriptions, the op label of
// pushproxy_graph_subscription_operations_total.
const (
	opCreate   = "create"
	opRenew    = "renew"
	opRecreate = "recreate"
	opDelete   = "delete"
	// opDeleteOrphan deletes a subscription to our endpoint the manager
	// does not keep (see Manager.sweepOrphans).
	opDeleteOrphan = "delete_orphan"
)

// managerMetrics are the metrics of the subscription manager.
type managerMetrics struct {
	subscriptions *prometheus.GaugeVec
	operations    *prometheus.CounterVec
	lifecycle     *prometheus.CounterVec
	nextExpiry    prometheus.Gauge
}

// newManagerMetrics makes the manager's metrics and registers them on reg
// when it is not nil; the lifecycle counter is shared with the source.
func newManagerMetrics(reg prometheus.Registerer) (*managerMetrics, error) {
	m := &managerMetrics{
		subscriptions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushproxy_graph_subscriptions",
			Help: "Graph subscriptions of the subscription manager: managed (users of the directory it keeps one for) and active (those with an unexpired subscription).",
		}, []string{"state"}),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_graph_subscription_operations_total",
			Help: "Graph subscription operations of the subscription manager by op (create, renew, recreate, delete, delete_orphan: one to our endpoint it does not keep) and result (ok, error).",
		}, []string{"op", "result"}),
		nextExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushproxy_graph_subscription_next_expiry_timestamp_seconds",
			Help: "Unix time at which the earliest Graph subscription of the manager expires (0 when it has none): close to now means renewals stopped.",
		}),
	}
	for _, state := range []string{"managed", "active"} {
		m.subscriptions.WithLabelValues(state)
	}
	for _, op := range []string{opCreate, opRenew, opRecreate, opDelete, opDeleteOrphan} {
		for _, result := range []string{"ok", "error"} {
			m.operations.WithLabelValues(op, result)
		}
	}
	if err := service.Register(reg, "Graph subscription manager", m.subscriptions, m.operations, m.nextExpiry); err != nil {
		return nil, err
	}
	lifecycle, err := lifecycleCounter(reg)
	if err != nil {
		return nil, err
	}
	m.lifecycle = lifecycle
	return m, nil
}

// operation counts one operation.
func (m *managerMetrics) operation(op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.operations.WithLabelValues(op, result).Inc()
}
