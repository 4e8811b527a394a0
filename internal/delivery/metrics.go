package delivery

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/service"
)

// Metrics are the delivery path's Prometheus metrics.
type Metrics struct {
	appFaults   *prometheus.CounterVec
	appPaused   *prometheus.GaugeVec
	removed     *prometheus.CounterVec
	kept        prometheus.Counter
	restored    prometheus.Counter
	deadLetters *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg (none when reg is nil) for the
// component named component.
func NewMetrics(reg prometheus.Registerer, component string) (*Metrics, error) {
	m := &Metrics{
		appFaults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_delivery_app_faults_total",
			Help: "Devices the relay answered with an app or credential fault, by tenant and app; no subscription is removed for them.",
		}, []string{"tenant", "app_id"}),
		appPaused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushproxy_delivery_app_paused",
			Help: "1 while sending for a tenant+app is paused behind its breaker after app faults; it resumes when a trial push succeeds.",
		}, []string{"tenant", "app_id"}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_delivery_subscriptions_removed_total",
			Help: "Subscriptions removed on a device-gone verdict (a tombstone keeps each for restore), by origin.",
		}, []string{"origin"}),
		kept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushproxy_delivery_stale_verdicts_total",
			Help: "Device-gone verdicts older than the subscription: the subscription was kept.",
		}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushproxy_delivery_subscriptions_restored_total",
			Help: "Subscriptions restored from their tombstones.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_delivery_dead_letters_total",
			Help: "Notifications dead-lettered by the delivery path, by reason.",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	if err := service.Register(reg, component, m.appFaults, m.appPaused, m.removed, m.kept, m.restored, m.deadLetters); err != nil {
		return nil, err
	}
	return m, nil
}
