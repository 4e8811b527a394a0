package probe

import (
	"github.com/pushproxy/pushproxy/internal/service"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// Subjects of the PROBES stream.
const (
	// SubjectConnectivity holds connectivity probe results.
	SubjectConnectivity = broker.SubjectProbes + ".connectivity"
	// SubjectCanary holds end-to-end canary results.
	SubjectCanary = broker.SubjectProbes + ".canary"
)

// ErrNoResult is returned by Last when no result was recorded yet.
var ErrNoResult = errors.New("no result recorded yet")

// Publish stores r as JSON on subject of the PROBES stream.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, r Result) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding probe result: %w", err)
	}
	if _, err := js.Publish(ctx, subject, data); err != nil {
		return fmt.Errorf("publishing probe result to %s: %w", subject, err)
	}
	return nil
}

// Last returns the newest result stored on subject, or ErrNoResult.
func Last(ctx context.Context, js jetstream.JetStream, subject string) (Result, error) {
	stream, err := js.Stream(ctx, broker.StreamProbes)
	if err != nil {
		return Result{}, fmt.Errorf("opening stream %s: %w", broker.StreamProbes, err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Result{}, ErrNoResult
	}
	if err != nil {
		return Result{}, fmt.Errorf("reading the last result on %s: %w", subject, err)
	}
	var r Result
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return Result{}, fmt.Errorf("decoding the last result on %s: %w", subject, err)
	}
	return r, nil
}

// Metrics are the gauges and histogram of one check (the probe or the
// canary): pushproxy_<check>_last_success (1 or 0),
// pushproxy_<check>_last_success_timestamp_seconds,
// pushproxy_<check>_latency_seconds, pushproxy_<check>_consecutive_failures
// and pushproxy_<check>_runs_total{result,class}.
type Metrics struct {
	lastSuccess     prometheus.Gauge
	lastSuccessTime prometheus.Gauge
	latency         prometheus.Histogram
	consecutive     prometheus.Gauge
	runs            *prometheus.CounterVec

	mu       sync.Mutex
	failures int
}

// NewMetrics registers the metrics of check ("probe" or "canary") on reg.
func NewMetrics(reg prometheus.Registerer, check, help string) (*Metrics, error) {
	name := func(s string) string { return "pushproxy_" + check + "_" + s }
	m := &Metrics{
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: name("last_success"),
			Help: "1 if the last " + help + " succeeded, 0 if it failed.",
		}),
		lastSuccessTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: name("last_success_timestamp_seconds"),
			Help: "When the last successful " + help + " ran, in Unix seconds.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    name("latency_seconds"),
			Help:    "Latency of each successful " + help + ".",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		consecutive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: name("consecutive_failures"),
			Help: "Failures of the " + help + " since its last success.",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: name("runs_total"),
			Help: "Runs of the " + help + ", by result and failure class.",
		}, []string{"result", "class"}),
	}
	if err := service.Register(reg, check, m.lastSuccess, m.lastSuccessTime, m.latency, m.consecutive, m.runs); err != nil {
		return nil, err
	}
	return m, nil
}

// Observe records r and returns the number of consecutive failures so far
// (0 after a success).
func (m *Metrics) Observe(r Result) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs.WithLabelValues(string(r.ResultType), string(r.Class)).Inc()
	if r.Succeeded() {
		m.latency.Observe(r.Latency.Seconds())
		m.failures = 0
		m.lastSuccess.Set(1)
		m.lastSuccessTime.Set(float64(r.At.UnixNano()) / 1e9)
	} else {
		m.failures++
		m.lastSuccess.Set(0)
	}
	m.consecutive.Set(float64(m.failures))
	return m.failures
}
