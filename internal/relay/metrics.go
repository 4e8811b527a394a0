package relay

import (
	"github.com/pushproxy/pushproxy/internal/service"

	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/relayproto"
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
}

// newMetrics registers the relay's metrics on reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_relay_requests_total",
			Help: "Publish requests by outcome (ok, unauthorized, bad_request, too_large, unsupported_media_type, invalid, rate_limited, unavailable).",
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
	}
	if err := service.Register(reg, "relay", m.requests, m.requestDuration, m.notifications, m.deliveries, m.providerLatency, m.inFlight, m.authFailures, m.rateLimited, m.appFaults, m.shareWaits); err != nil {
		return nil, err
	}
	for _, o := range []string{outcomeOK, outcomeUnauthorized, outcomeBadRequest, outcomeTooLarge, outcomeUnsupportedMediaType, outcomeInvalid, outcomeRateLimited, outcomeUnavailable} {
		m.requests.WithLabelValues(o)
	}
	return m, nil
}

// delivery counts one device outcome.
func (m *metrics) delivery(provider string, status relayproto.DeviceStatus) {
	m.deliveries.WithLabelValues(provider, string(status)).Inc()
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
