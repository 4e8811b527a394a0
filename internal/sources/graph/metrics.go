package graph

import (
	"github.com/pushproxy/pushproxy/internal/service"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Graph-specific counters; ingest counts requests and
// events of every source.
type metrics struct {
	notifications *prometheus.CounterVec
	lifecycle     *prometheus.CounterVec
	validations   *prometheus.CounterVec
}

// newMetrics makes the source's metrics and registers them on reg when it
// is not nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_graph_notifications_total",
			Help: "Graph change notifications by result: accepted, lifecycle, or dropped as bad_client_state, bad_subscription_id, unsupported_change_type, unsupported_resource, unknown_user.",
		}, []string{"result"}),
		lifecycle: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_graph_lifecycle_events_total",
			Help: "Graph lifecycle notifications with a valid clientState, by event (reauthorizationRequired, subscriptionRemoved, missed, other).",
		}, []string{"event"}),
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_graph_validations_total",
			Help: "Graph endpoint validation requests by result (ok, invalid, unauthorized).",
		}, []string{"result"}),
	}
	for _, r := range []string{resultAccepted, resultLifecycle, resultBadClientState, resultBadSubscription, resultChangeType, resultResource, resultUnknownUser} {
		m.notifications.WithLabelValues(r)
	}
	for _, e := range []string{LifecycleReauthorizationRequired, LifecycleSubscriptionRemoved, LifecycleMissed} {
		m.lifecycle.WithLabelValues(e)
	}
	if err := service.Register(reg, "Graph", m.notifications, m.lifecycle, m.validations); err != nil {
		return nil, err
	}
	return m, nil
}
