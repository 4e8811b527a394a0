package graph

import (
	"errors"
	"fmt"

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
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_graph_validations_total",
			Help: "Graph endpoint validation requests by result (ok, invalid, unauthorized).",
		}, []string{"result"}),
	}
	for _, r := range []string{resultAccepted, resultLifecycle, resultBadClientState, resultBadSubscription, resultChangeType, resultResource, resultUnknownUser} {
		m.notifications.WithLabelValues(r)
	}
	if err := service.Register(reg, "Graph", m.notifications, m.validations); err != nil {
		return nil, err
	}
	lifecycle, err := lifecycleCounter(reg)
	if err != nil {
		return nil, err
	}
	m.lifecycle = lifecycle
	return m, nil
}

// lifecycleCounter makes pushproxy_graph_lifecycle_events_total and
// registers it on reg when it is not nil. The source and the subscription
// manager both count lifecycle notifications (each those that reach its
// endpoint): on a registry where one of them registered the counter, the
// other gets the registered one.
func lifecycleCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushproxy_graph_lifecycle_events_total",
		Help: "Graph lifecycle notifications with a valid clientState, by event (reauthorizationRequired, subscriptionRemoved, missed, other).",
	}, []string{"event"})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return nil, fmt.Errorf("registering Graph lifecycle metrics: %w", err)
			}
			existing, ok := already.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, fmt.Errorf("registering Graph lifecycle metrics: %w", err)
			}
			c = existing
		}
	}
	for _, e := range []string{LifecycleReauthorizationRequired, LifecycleSubscriptionRemoved, LifecycleMissed} {
		c.WithLabelValues(e)
	}
	return c, nil
}
