package graph

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/service"
)

// counterMetrics are the metrics of the Graph counter.
type counterMetrics struct {
	throttled *prometheus.CounterVec
}

// throttleStatuses are the HTTP statuses after which the counter waits
// and asks again.
func throttleStatuses() []int {
	return []int{429, 503, 504}
}

// newCounterMetrics makes the counter's metrics and registers them on reg
// when it is not nil.
func newCounterMetrics(reg prometheus.Registerer) (*counterMetrics, error) {
	m := &counterMetrics{
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_graph_counter_throttled_total",
			Help: "Graph answers to the unread counter that asked it to wait and retry, by HTTP status (429, 503, 504): a whole $batch request counts once, each throttled request inside a batch once.",
		}, []string{"status"}),
	}
	for _, s := range throttleStatuses() {
		m.throttled.WithLabelValues(strconv.Itoa(s))
	}
	if err := service.Register(reg, "Graph counter", m.throttled); err != nil {
		return nil, err
	}
	return m, nil
}

// throttledBy counts one throttling answer.
func (m *counterMetrics) throttledBy(status int) {
	m.throttled.WithLabelValues(strconv.Itoa(status)).Inc()
}
