package ingest

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/service"
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
	tenants  tenantCounter
}

// MaxTenantLabels bounds the distinct tenant labels of
// pushproxy_ingest_tenant_events_total; the events of later tenants count
// under tenant="other".
const MaxTenantLabels = 1000

// tenantCounter counts stored events per tenant, with at most max
// distinct tenant labels.
type tenantCounter struct {
	vec *prometheus.CounterVec
	max int

	mu   sync.Mutex
	seen map[string]prometheus.Counter
}

// add counts n stored events of tenant.
func (c *tenantCounter) add(tenant string, n int) {
	c.mu.Lock()
	ctr, ok := c.seen[tenant]
	if !ok {
		label := tenant
		if len(c.seen) >= c.max {
			label = "other"
		}
		ctr = c.vec.WithLabelValues(label)
		if label != "other" {
			c.seen[tenant] = ctr
		}
	}
	c.mu.Unlock()
	ctr.Add(float64(n))
}

// stored counts the stored events of evs per tenant; acks says which were
// duplicates.
func (c *tenantCounter) stored(evs []events.Event, acks []Ack) {
	run, tenant := 0, ""
	for i := range evs {
		if acks[i].Duplicate {
			continue
		}
		if evs[i].Tenant != tenant && run > 0 {
			c.add(tenant, run)
			run = 0
		}
		tenant = evs[i].Tenant
		run++
	}
	if run > 0 {
		c.add(tenant, run)
	}
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
		tenants: tenantCounter{max: MaxTenantLabels, seen: map[string]prometheus.Counter{}, vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_ingest_tenant_events_total",
			Help: "Events stored by tenant (the first 1000 tenants seen by this process; later ones count as tenant=\"other\").",
		}, []string{"tenant"})},
	}
	return m, service.Register(reg, "ingest", m.events, m.requests, m.rejected, m.publish, m.tenants.vec)
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
