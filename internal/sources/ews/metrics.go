package ews

import (
	"github.com/pushproxy/pushproxy/internal/service"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the EWS-specific counters; ingest counts requests and events
// of every source.
type metrics struct {
	received           *prometheus.CounterVec
	answers            *prometheus.CounterVec
	unknown            prometheus.Counter
	subscriptionErrors *prometheus.CounterVec
}

// newMetrics makes the source's metrics and registers them on reg when it
// is not nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ews_notification_events_total",
			Help: "Events received in EWS push notifications, by EWS event type (StatusEvent counts heartbeats).",
		}, []string{"type"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ews_answers_total",
			Help: "SendNotificationResult answers by SubscriptionStatus (OK, Unsubscribe).",
		}, []string{"status"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushproxy_ews_unknown_subscriptions_total",
			Help: "EWS notification messages about subscriptions the registry does not know.",
		}),
		subscriptionErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ews_subscription_errors_total",
			Help: "Response messages of class Error in EWS notifications, by Exchange response code (unknown_subscription when the registry does not know it).",
		}, []string{"code"}),
	}
	for _, t := range EventTypes() {
		m.received.WithLabelValues(string(t))
	}
	for _, s := range []Status{StatusOK, StatusUnsubscribe} {
		m.answers.WithLabelValues(string(s))
	}
	if err := service.Register(reg, "EWS", m.received, m.answers, m.unknown, m.subscriptionErrors); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) countEvents(n *Notification) {
	if n == nil {
		return
	}
	for i := range n.Events {
		m.received.WithLabelValues(string(n.Events[i].Type)).Inc()
	}
}
