package ews

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/service"
)

// Operations on subscriptions, the op label of
// pushproxy_ews_subscription_operations_total.
const (
	opSubscribe   = "subscribe"
	opResubscribe = "resubscribe"
)

// Results of operations, the result label.
const (
	resultOK               = "ok"
	resultError            = "error"
	resultInvalidWatermark = "invalid_watermark"
)

// managerMetrics are the metrics of the subscription manager.
type managerMetrics struct {
	subscriptions prometheus.Gauge
	operations    *prometheus.CounterVec
	gaps          *prometheus.CounterVec
	age           prometheus.Gauge
	frequency     prometheus.Gauge
}

// newManagerMetrics makes the manager's metrics and registers them on reg
// when it is not nil.
func newManagerMetrics(reg prometheus.Registerer) (*managerMetrics, error) {
	m := &managerMetrics{
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushproxy_ews_subscriptions",
			Help: "EWS push subscriptions of the subscription manager: listed mailboxes with a subscription.",
		}),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ews_subscription_operations_total",
			Help: "EWS Subscribe operations of the subscription manager by op (subscribe: afresh; resubscribe: from the last watermark) and result (ok, error, invalid_watermark: Exchange refused the watermark and the mailbox is subscribed afresh).",
		}, []string{"op", "result"}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ews_subscription_gaps_total",
			Help: "EWS subscriptions made again by reason: silence (nothing for twice the status frequency), error (a notification reported one), restart (the manager started), watermark (no usable watermark: events may have been missed, the count is read again).",
		}, []string{"reason"}),
		age: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushproxy_ews_subscription_last_notification_age_seconds",
			Help: "Seconds since the EWS subscription heard from longest ago sent its last notification (or was made, when it sent none); past twice the status frequency it is made again.",
		}),
		frequency: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushproxy_ews_subscription_status_frequency_seconds",
			Help: "The StatusFrequency the manager asks of each EWS subscription: Exchange sends at least one notification that often.",
		}),
	}
	for _, op := range []string{opSubscribe, opResubscribe} {
		for _, result := range []string{resultOK, resultError, resultInvalidWatermark} {
			if op == opSubscribe && result == resultInvalidWatermark {
				continue
			}
			m.operations.WithLabelValues(op, result)
		}
	}
	for _, reason := range []gapReason{gapSilence, gapError, gapRestart, gapWatermark} {
		m.gaps.WithLabelValues(string(reason))
	}
	if err := service.Register(reg, "EWS subscription manager", m.subscriptions, m.operations, m.gaps, m.age, m.frequency); err != nil {
		return nil, err
	}
	return m, nil
}

// operation counts one operation.
func (m *managerMetrics) operation(op, result string) {
	m.operations.WithLabelValues(op, result).Inc()
}

// errorResult is the result label of an operation that ended with err.
func errorResult(err error) string {
	if err != nil {
		return resultError
	}
	return resultOK
}
