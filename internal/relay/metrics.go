package relay

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Outcomes of a publish request, the outcome label of
// pushproxy_relay_requests_total.
const (
	outcomeOK                   = "ok"
	outcomeUnauthorized         = "unauthorized"
	outcomeBadRequest           = "bad_request"
	outcomeTooLarge             = "too_large"
	outcomeUnsupportedMediaType = "unsupported_media_type"
	outcomeInvalid              = "invalid"
	outcomeRateLimited          = "rate_limited"
	outcomeUnavailable          = "unavailable"
	outcomeStalled              = "stalled"
)

// Results of a tenant's notifications at its quota, the result label of
// pushproxy_relay_tenant_notifications_total.
const (
	quotaAccepted = "accepted"
	quotaHeldBack = "held_back"
)

// metrics are the relay's Prometheus metrics.
type metrics struct {
	requests        *prometheus.CounterVec
	requestDuration prometheus.Histogram
	notifications   *prometheus.CounterVec
	deliveries      *prometheus.CounterVec
	providerLatency *prometheus.HistogramVec
	inFlight        *prometheus.GaugeVec
	authFailures    *prometheus.CounterVec
	rateLimited     *prometheus.CounterVec
	appFaults       *prometheus.CounterVec
	shareWaits      *prometheus.CounterVec
	outageHeld      *prometheus.CounterVec
	atQuota         *prometheus.CounterVec
}

// newMetrics registers the relay's metrics on reg, the quotas of tenants
// and the push services' outages (outageAges) among them.
func newMetrics(reg prometheus.Registerer, tenants *tenantLimiter, outageAges func() map[appKey]time.Duration) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_requests_total",
			Help: "Publish requests by outcome (ok, unauthorized, bad_request, too_large, unsupported_media_type, invalid, rate_limited, unavailable, stalled: read while or just after the relay did not run, refused to be sent again).",
		}, []string{"outcome"}),
		requestDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushproxy_relay_request_duration_seconds",
			Help:    "Time to answer a publish request that was accepted, deliveries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_notifications_total",
			Help: "Notifications accepted, by kind (push, or monitoring for the connectivity probe).",
		}, []string{"kind"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_deliveries_total",
			Help: "Device deliveries by provider and status (delivered, gone, retry, rejected).",
		}, []string{"provider", "status"}),
		providerLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushproxy_relay_provider_duration_seconds",
			Help:    "Time a provider took to answer one send.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}, []string{"provider"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushproxy_relay_provider_in_flight",
			Help: "Sends in progress, by provider (bounded by the provider's concurrency limit).",
		}, []string{"provider"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_auth_failures_total",
			Help: "Publish requests refused with 401, by reason.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_rate_limited_total",
			Help: "Publish requests refused with 429 by the per-tenant rate limit, by tenant.",
		}, []string{"tenant"}),
		appFaults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_app_faults_total",
			Help: "Device deliveries answered as app faults (bad provider credentials or configuration, unknown app, app not bound to the organization), by organization, app and provider (none: never forwarded).",
		}, []string{"organization", "app_id", "provider"}),
		shareWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_share_waits_total",
			Help: "Sends that queued because their organization+app had its whole share of the push service's slots in flight (--provider-share), by organization, app and provider.",
		}, []string{"organization", "app_id", "provider"}),
		outageHeld: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_outage_held_total",
			Help: "Sends answered \"retry\" without being sent because their organization+app's push service has been down a second or more (one send a second goes through to see whether it is back), by organization, app and provider.",
		}, []string{"organization", "app_id", "provider"}),
		atQuota: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_tenant_notifications_total",
			Help: "Notifications (monitoring ones aside) of each organization at its quota, by result: accepted, or held_back (refused with 429; the dispatcher sends them again after the back-off, and counts them again).",
		}, []string{"tenant", "result"}),
	}
	if err := service.Register(reg, "relay", m.requests, m.requestDuration, m.notifications, m.deliveries, m.providerLatency, m.inFlight, m.authFailures, m.rateLimited, m.appFaults, m.shareWaits, m.outageHeld, m.atQuota, newQuotaCollector(tenants), newOutageCollector(outageAges)); err != nil {
		return nil, err
	}
	for _, o := range []string{outcomeOK, outcomeUnauthorized, outcomeBadRequest, outcomeTooLarge, outcomeUnsupportedMediaType, outcomeInvalid, outcomeRateLimited, outcomeUnavailable, outcomeStalled} {
		m.requests.WithLabelValues(o)
	}
	return m, nil
}

// delivery counts one device outcome.
func (m *metrics) delivery(provider string, status relayproto.DeviceStatus) {
	m.deliveries.WithLabelValues(provider, string(status)).Inc()
}

// quota counts n notifications of tenant at its quota, held back or
// accepted. Both results of a tenant exist from its first request, so that
// a rate sees its first notifications held back.
func (m *metrics) quota(tenant string, n int, heldBack bool) {
	accepted, held := m.atQuota.WithLabelValues(tenant, quotaAccepted), m.atQuota.WithLabelValues(tenant, quotaHeldBack)
	if heldBack {
		held.Add(float64(n))
	} else {
		accepted.Add(float64(n))
	}
}

// quotaCollector exports the quota that applies now to each tenant that
// has a token bucket (none while no limit applies to it): the partner's
// own quota, or the relay's default.
type quotaCollector struct {
	tenants     *tenantLimiter
	rate, burst *prometheus.Desc
}

func newQuotaCollector(tenants *tenantLimiter) *quotaCollector {
	return &quotaCollector{
		tenants: tenants,
		rate: prometheus.NewDesc("pushproxy_relay_tenant_quota_per_second",
			"Notifications per second each organization may send on average: its partner registration's quota, else --tenant-rate.", []string{"tenant"}, nil),
		burst: prometheus.NewDesc("pushproxy_relay_tenant_quota_burst",
			"Notifications each organization may send at once: its partner registration's quota burst, else --tenant-burst.", []string{"tenant"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rate
	ch <- c.burst
}

// Collect implements prometheus.Collector.
func (c *quotaCollector) Collect(ch chan<- prometheus.Metric) {
	for _, tenant := range c.tenants.tenants() {
		q := c.tenants.quotaOf(tenant)
		if q.limit <= 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, float64(q.limit), tenant)
		ch <- prometheus.MustNewConstMetric(c.burst, prometheus.GaugeValue, float64(q.burst), tenant)
	}
}

// outageCollector exports how long each organization+app's push service
// has been down, while sends still meet the failure.
type outageCollector struct {
	ages func() map[appKey]time.Duration
	desc *prometheus.Desc
}

func newOutageCollector(ages func() map[appKey]time.Duration) *outageCollector {
	return &outageCollector{ages: ages, desc: prometheus.NewDesc("pushproxy_relay_push_service_down_seconds",
		"How long the push service of each organization+app has failed as a whole (5xx, no connection, no answer in time) without answering, while its sends still meet the failure (the last within a minute); absent otherwise.",
		[]string{"organization", "app_id"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *outageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *outageCollector) Collect(ch chan<- prometheus.Metric) {
	for k, age := range c.ages() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, age.Seconds(), k.org, k.app)
	}
}

// appFault counts an app fault of organization's app.
func (m *metrics) appFault(organization, appID, provider string) {
	m.appFaults.WithLabelValues(organization, appID, provider).Inc()
}

// authReasons names the token rejections for the reason label, most
// specific first.
var authReasons = []struct {
	err    error
	reason string
}{
	{tokens.ErrMissingToken, "missing_token"},
	{tokens.ErrTokenTooLarge, "token_too_large"},
	{tokens.ErrMalformedToken, "malformed_token"},
	{tokens.ErrUnsupportedAlgorithm, "unsupported_algorithm"},
	{tokens.ErrUnknownKey, "unknown_key"},
	{tokens.ErrKeyNotActive, "key_not_active"},
	{tokens.ErrBadSignature, "bad_signature"},
	{tokens.ErrExpired, "expired"},
	{tokens.ErrNotYetValid, "not_yet_valid"},
	{tokens.ErrLifetimeTooLong, "lifetime_too_long"},
	{tokens.ErrWrongAudience, "wrong_audience"},
	{tokens.ErrWrongIssuer, "wrong_issuer"},
	{tokens.ErrNotTrustedForDelegation, "not_trusted_for_delegation"},
}

// authReason is the reason label of a token rejection.
func authReason(err error) string {
	for _, r := range authReasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}
