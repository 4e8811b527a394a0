package ingest

import (
	"github.com/pushproxy/pushproxy/internal/service"

	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of one event, as in answers and in pushproxy_ingest_events_total.
const (
	OutcomeStored    = "stored"
	OutcomeDuplicate = "duplicate"
	OutcomeRejected  = "rejected"
	// OutcomeFailed counts events of a request answered 503: JetStream did
	// not acknowledge them and the source retries.
	OutcomeFailed = "failed"
)

type metrics struct {
	events   *prometheus.CounterVec
	requests *prometheus.CounterVec
	rejected *prometheus.CounterVec
	publish  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ingest_events_total",
			Help: "Events received by source and outcome (stored, duplicate, rejected, failed).",
		}, []string{"source", "outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ingest_requests_total",
			Help: "Requests to source endpoints by source and HTTP status code.",
		}, []string{"source", "code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ingest_rejected_total",
			Help: "Requests answered with an error, by source and reason (the error code of the answer).",
		}, []string{"source", "reason"}),
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushproxy_ingest_publish_duration_seconds",
			Help:    "Time from publishing a request's events to JetStream's last acknowledgement, by source.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"source"}),
	}
	return m, service.Register(reg, "ingest", m.events, m.requests, m.rejected, m.publish)
}

// request counts one answered request of source.
func (m *metrics) request(source string, rec *recorder) {
	status := rec.status
	if status == 0 {
		status = 200
	}
	m.requests.WithLabelValues(source, strconv.Itoa(status)).Inc()
	if status >= 400 {
		reason := "http_" + strconv.Itoa(status)
		if rec.err != nil {
			reason = rec.err.Code
		}
		m.rejected.WithLabelValues(source, reason).Inc()
	}
}
