package ews

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/service"
)

// counterMetrics are the metrics of the EWS counter.
type counterMetrics struct {
	busy prometheus.Counter
}

// newCounterMetrics makes the counter's metrics and registers them on reg
// when it is not nil.
func newCounterMetrics(reg prometheus.Registerer) (*counterMetrics, error) {
	m := &counterMetrics{
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushproxy_ews_counter_busy_total",
			Help: "ErrorServerBusy answers (or bare HTTP 429s and 503s) to the EWS unread counter's GetFolder requests, each followed by the back-off the server asked for.",
		}),
	}
	if err := service.Register(reg, "EWS counter", m.busy); err != nil {
		return nil, err
	}
	return m, nil
}
