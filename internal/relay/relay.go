// Package relay is the cloud push service: it takes badge notifications
// from the on-premises dispatchers of partner organisations, authenticated
// with S2S OAuth tokens, and forwards them to APNs, FCM and Web Push.
//
// It answers the relay protocol (see internal/relayproto) at
//
//	POST {BasePath}/service.svc/PublishOnPremNotifications
//	GET  {BasePath}/metadata/json/1   (auth metadata document)
//
// A request is handled in this order: the bearer token is verified (a
// missing or bad one gets 401 with a WWW-Authenticate challenge, and nothing
// is forwarded); the body is decoded and checked (400, 413, 415, 422); the
// tenant's token bucket is charged one token per notification (429 with a
// back-off when empty); monitoring notifications of the connectivity probe
// are answered at once; every other recipient's appId is routed to its
// provider, and the sends run concurrently, each provider kind in its own
// lane with a concurrency limit and a timeout, and within a lane each
// organization+app in its own bulkhead with a share of the lane's slots,
// so a slow push service, or one organization's slow endpoint, delays only
// its own devices. The answer has one result per notification
// and device: delivered, gone (remove the subscription), retry (with
// BackOffTimeInMilliseconds) or rejected.
//
// The tenant is the partner organisation that registered the token's
// signing certificate, never the payload's tenantId. Partners and apps live
// in NATS key-value buckets (see internal/relay/registry) that every relay
// replica watches.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/logpush"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/relay/webui"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Defaults of Config.
const (
	DefaultAddr         = ":8027"
	DefaultBasePath     = "/PushNotifications"
	DefaultMaxBodyBytes = 4 << 20
	// DefaultTenantRate is a deliberate per-organization quota, in
	// notifications per second. It serves a large organization: issue 14's
	// deployment peaked at 2,000 events/s, which the dispatcher coalesces
	// into fewer pushes, so 5,000/s leaves it more than twice its peak. It
	// still stops one partner from taking a relay replica to itself (see
	// BenchmarkRelayVsForward for what a replica forwards). It was 100/s,
	// which capped that deployment at about 130 pushes/s. A partner's
	// registration may carry its own quota (registry.Quota).
	DefaultTenantRate = 5000
	// DefaultTenantBurst is what an organization may send at once: 4
	// seconds of DefaultTenantRate (registry.QuotaBurstSeconds), so that
	// the backlog of a short relay outage or a dispatcher takeover goes
	// out at once.
	DefaultTenantBurst = DefaultTenantRate * registry.QuotaBurstSeconds
	// DefaultProviderConcurrent is the sends in flight to one push
	// service, a quarter of them per organization+app: HTTP/2 carries
	// them as streams of a few connections. One organization+app then
	// sends about 64 / the push service's answer time: some 2,000 a
	// second at 30 ms. At 64 (16 per organization+app) the whole-pipeline
	// bench was capped at about 4,500 pushes a second by this alone.
	DefaultProviderConcurrent = 256
	DefaultProviderTimeout    = 5 * time.Second
	DefaultRetryBackOff       = 30 * time.Second
	DefaultDrainTimeout       = 30 * time.Second
	DefaultDevicesPath        = "/devices"
)

// Config is the relay's configuration. The zero value of a field means its
// default, except Host, which is required.
type Config struct {
	// Addr is where the relay listens, host:port. Default ":8027".
	Addr string
	// Listener, when set, is used instead of listening on Addr (tests and
	// pushctl standalone pass one they opened).
	Listener net.Listener
	// TLSCertFile and TLSKeyFile, when both set, make the relay serve HTTPS
	// with this PEM certificate chain and key. The files are read again
	// when they change, so a renewed certificate needs no restart.
	TLSCertFile, TLSKeyFile string

	// BasePath is the path of the proxy URI, the prefix of the relay
	// protocol's paths. Default "/PushNotifications".
	BasePath string
	// Principal is the relay's principal id: the first part of a token's
	// aud and the client_id of the 401 challenge. Default
	// settings.DefaultRelayPrincipal.
	Principal string
	// Host is the relay's host name as the on-premises side names it in a
	// token's aud (<principal>/<host>@<realm>): the host name of the proxy
	// URI, without a port. Required.
	Host string
	// PublicURL is the relay's base URL as partners reach it, e.g.
	// https://push.example.net/PushNotifications: the auth metadata
	// document names its endpoints under it, never under a request's Host
	// header (which a caller chooses). Required unless the relay listens on
	// loopback only, where it defaults to http(s)://<Addr><BasePath>.
	PublicURL string
	// Realm, when set, is the one realm every token's aud must name. Empty
	// means each partner's own realm (multi-tenant), shown as "*" in the
	// challenge and the metadata.
	Realm string
	// Issuer is the issuer id the relay trusts, shown in the challenge's
	// trusted_issuers as <issuer>@<realm>. Default
	// settings.DefaultServiceName.
	Issuer string
	// ClockSkew is the clock difference tolerated on a token's nbf and exp.
	// Default tokens.DefaultClockSkew.
	ClockSkew time.Duration

	// MaxBodyBytes bounds a publish request's body (413 beyond). Default
	// 4 MiB.
	MaxBodyBytes int64
	// TenantRate is how many notifications per second each tenant may send
	// on average, and TenantBurst how many at once: the default quota of an
	// organization. Default 5,000 and 20,000. A negative TenantRate turns
	// the default limit off. Each relay replica counts on its own.
	TenantRate  float64
	TenantBurst int
	// TenantQuotas, when set, gives organizations quotas of their own,
	// overriding TenantRate and TenantBurst; a change applies at the
	// organization's next request. Run sets it to the partner registry,
	// where a partner's registration may carry a quota.
	TenantQuotas QuotaSource
	// ProviderLimit bounds each provider kind's sends: concurrency across
	// all requests, and how long a request waits for them. Default 64 and
	// 5s, well inside the dispatcher's default 10s request timeout. ProviderLimits overrides it per kind ("apns", "fcm", "webpush",
	// "log").
	ProviderLimit  Limit
	ProviderLimits Limits
	// ProviderShare is how many of a push service's concurrent sends one
	// organization+app may hold (its bulkhead); its further sends queue
	// behind its own, never in front of another's. 0 means a quarter of
	// the push service's concurrency (16 of the default 64), at least 1.
	ProviderShare int
	// ProviderCAFile is a PEM bundle of certificate authorities the
	// providers trust besides the system roots, for APNs, FCM (and its
	// token endpoint) and Web Push endpoints: a test push service, or an
	// egress proxy that terminates TLS.
	ProviderCAFile string
	// AllowInsecureEndpoints, for tests only, lets Web Push post to http://
	// endpoints and connect to loopback, private, link-local and other
	// non-public addresses, which it refuses by default.
	AllowInsecureEndpoints bool
	// RetryBackOff is the back-off given with a "retry" result when the
	// push service asked to slow down without saying how long to wait,
	// and the most the back-off of a push service down as a whole grows
	// to (see outages). Default 30s.
	RetryBackOff time.Duration

	// Replicas is the number of replicas of the relay's buckets: 1 on one
	// NATS server, 3 on a cluster. Default 1.
	Replicas int
	// DevicesPage serves a page at DevicesPath that lists the devices of
	// apps of provider "log" with their latest badge, live (for pushctl
	// standalone). Off by default: it shows device references and tenants.
	DevicesPage bool
	// DeviceNames, when set, names the devices page's devices (user and
	// label). A relay knows only references; pushctl standalone, which
	// runs the on-premises side too, sets it from the subscriptions.
	DeviceNames webui.Names
	// DevicesPath is where the devices page is served. Default "/devices".
	DevicesPath string
	// LogMaxDevices bounds how many devices the built-in "log" provider
	// remembers. Default logpush.DefaultMaxDevices.
	LogMaxDevices int
	// DrainTimeout is how long shutdown waits for requests in flight.
	// Default 30s.
	DrainTimeout time.Duration
	// ProviderHTTPClient, when set, is the HTTP client of the APNs, FCM and
	// Web Push providers (tests, egress proxies), used as it is:
	// ProviderCAFile and the Web Push address check do not apply to it.
	ProviderHTTPClient *http.Client
}

// withDefaults returns c with every unset field at its default.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.BasePath == "" {
		c.BasePath = DefaultBasePath
	}
	c.BasePath = "/" + strings.Trim(c.BasePath, "/")
	if c.BasePath == "/" {
		c.BasePath = ""
	}
	if c.Principal == "" {
		c.Principal = settings.DefaultRelayPrincipal
	}
	if c.Issuer == "" {
		c.Issuer = settings.DefaultServiceName
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = tokens.DefaultClockSkew
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.TenantRate == 0 {
		c.TenantRate = DefaultTenantRate
	}
	if c.TenantBurst == 0 {
		c.TenantBurst = DefaultTenantBurst
	}
	if c.ProviderLimit.Concurrency == 0 {
		c.ProviderLimit.Concurrency = DefaultProviderConcurrent
	}
	if c.ProviderLimit.Timeout == 0 {
		c.ProviderLimit.Timeout = DefaultProviderTimeout
	}
	if c.RetryBackOff == 0 {
		c.RetryBackOff = DefaultRetryBackOff
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DevicesPath == "" {
		c.DevicesPath = DefaultDevicesPath
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	return c
}

// validate reports the first unusable setting of a config with defaults.
func (c Config) validate() error {
	switch {
	case c.Host == "":
		return errors.New("the relay's host name is required (--host): the host of the proxy URI, as tokens name it in their audience")
	case strings.ContainsAny(c.BasePath, "{} \t"):
		return fmt.Errorf("base path %q must not contain braces or spaces", c.BasePath)
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return errors.New("TLS needs both a certificate file and a key file")
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("maximum body size %d is under 1 KiB", c.MaxBodyBytes)
	case c.TenantBurst < 1:
		return fmt.Errorf("tenant burst %d must be at least 1", c.TenantBurst)
	case c.RetryBackOff < 0 || c.ClockSkew < 0:
		return errors.New("retry back-off and clock skew must not be negative")
	case !strings.HasPrefix(c.DevicesPath, "/") || strings.ContainsAny(c.DevicesPath, "{} \t"):
		return fmt.Errorf("devices page path %q must start with / and have no braces or spaces", c.DevicesPath)
	}
	if c.ProviderShare < 0 {
		return fmt.Errorf("provider share %d must not be negative", c.ProviderShare)
	}
	if c.ProviderLimit.Concurrency < 1 || c.ProviderLimit.Timeout <= 0 {
		return fmt.Errorf("provider concurrency %d and timeout %s must be positive", c.ProviderLimit.Concurrency, c.ProviderLimit.Timeout)
	}
	for kind, l := range c.ProviderLimits {
		if l.Concurrency < 1 || l.Timeout < 0 {
			return fmt.Errorf("provider %s: concurrency %d must be positive and timeout %s not negative", kind, l.Concurrency, l.Timeout)
		}
	}
	switch {
	case c.PublicURL == "" && !c.onLoopback():
		return errors.New("the relay's public URL is required (--public-url, e.g. https://" + c.Host + c.BasePath + ") unless it listens on loopback only: the auth metadata document names its endpoints under it")
	case c.PublicURL != "" && !validPublicURL(c.PublicURL):
		return fmt.Errorf("public URL %q is not an absolute http(s) URL without query or fragment", c.PublicURL)
	}
	return nil
}

// onLoopback reports whether the relay listens on a loopback address only.
func (c Config) onLoopback() bool {
	addr := c.Addr
	if c.Listener != nil {
		addr = c.Listener.Addr().String()
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// publicBase is the base URL the metadata document names endpoints under:
// PublicURL, or on loopback the listening address.
func (c Config) publicBase() string {
	if c.PublicURL != "" {
		return strings.TrimSuffix(c.PublicURL, "/")
	}
	addr := c.Addr
	if c.Listener != nil {
		addr = c.Listener.Addr().String()
	}
	scheme := "http"
	if c.TLSCertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + addr + c.BasePath
}

// validPublicURL reports whether u is an absolute http(s) URL with a host
// and no query or fragment.
func validPublicURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "https" || p.Scheme == "http") && p.Host != "" && p.RawQuery == "" && p.Fragment == ""
}

// trustedIssuer is <issuer>@<realm> for the challenge, with realm "*" when
// each partner has its own.
func (c Config) trustedIssuer() string {
	return c.Issuer + "@" + c.realmOrAny()
}

// realmOrAny is the configured realm, or "*" in multi-tenant mode.
func (c Config) realmOrAny() string {
	if c.Realm == "" {
		return "*"
	}
	return c.Realm
}

// Run runs the relay until ctx ends, then drains requests in flight. It
// provisions the relay's buckets on conn (the relay's own NATS; in pushctl
// standalone the embedded server), loads and watches the partner and app
// registries, and serves the relay protocol, the auth metadata, /healthz,
// /readyz, /metrics (on reg) and, when enabled, the devices page.
func Run(ctx context.Context, cfg Config, conn *broker.Conn, log zerolog.Logger, reg *prometheus.Registry) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("relay configuration: %w", err)
	}
	log = log.With().Str("component", "relay").Logger()

	store, err := registry.Provision(ctx, conn.JS, cfg.Replicas)
	if err != nil {
		return err
	}
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	partners, err := store.WatchPartners(watchCtx, log)
	if err != nil {
		return err
	}
	roots, err := ProviderRoots(cfg.ProviderCAFile)
	if err != nil {
		return fmt.Errorf("relay configuration: %w", err)
	}
	if cfg.AllowInsecureEndpoints {
		log.Warn().Msg("--allow-insecure-endpoints: Web Push may post to http:// and to loopback and private addresses; for tests only")
	}
	logProvider := logpush.New(logpush.Config{MaxDevices: cfg.LogMaxDevices}, providers.WithLogger(log))
	apps := newProviderSet(ProviderOptions{
		Log:                    logProvider,
		HTTPClient:             cfg.ProviderHTTPClient,
		RootCAs:                roots,
		AllowInsecureEndpoints: cfg.AllowInsecureEndpoints,
		Logger:                 log,
	}, log)
	defer apps.Close()
	appsWatch, err := store.WatchApps(watchCtx, log, apps.apply)
	if err != nil {
		return err
	}

	verifier, err := tokens.NewVerifier(tokens.VerifierOptions{
		PrincipalID: cfg.Principal,
		Host:        cfg.Host,
		Realm:       cfg.Realm,
		Partners:    partners,
		ClockSkew:   cfg.ClockSkew,
	})
	if err != nil {
		return err
	}
	if cfg.TenantQuotas == nil {
		cfg.TenantQuotas = partners
	}
	srv, err := NewServer(cfg, verifier, apps, reg, log)
	if err != nil {
		return err
	}
	if err := registerRegistryGauges(reg, partners.Len, apps.Len); err != nil {
		return err
	}

	go srv.WatchStalls(ctx)
	mux := http.NewServeMux()
	srv.Register(mux)
	// Readiness does not follow the NATS connection: without NATS the relay
	// still verifies and forwards from its in-memory registries, so a NATS
	// outage must not take every replica out of service.
	service.Handle(mux, reg, partners.Check, appsWatch.Check)
	if cfg.DevicesPage {
		webui.New(logProvider, log, ctx.Done()).WithNames(cfg.DeviceNames).Register(mux, cfg.DevicesPath)
	}

	ln := cfg.Listener
	if ln == nil {
		if ln, err = service.Listen(cfg.Addr); err != nil {
			return err
		}
	}
	if cfg.TLSCertFile != "" {
		certs, err := newCertReloader(cfg.TLSCertFile, cfg.TLSKeyFile, log)
		if err != nil {
			_ = ln.Close()
			return err
		}
		ln = tls.NewListener(ln, &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.get,
			NextProtos:     []string{"h2", "http/1.1"},
		})
	}
	log.Info().
		Str("base_path", cfg.BasePath).
		Str("principal", cfg.Principal).
		Str("host", cfg.Host).
		Str("realm", cfg.realmOrAny()).
		Bool("tls", cfg.TLSCertFile != "").
		Int("partners", partners.Len()).
		Int("apps", apps.Len()).
		Msg("relay starting")
	return service.Serve(ctx, log, ln, mux, cfg.DrainTimeout)
}

// registerRegistryGauges exports the sizes of the registries.
func registerRegistryGauges(reg prometheus.Registerer, partners, apps func() int) error {
	return service.Register(reg, "relay registry",
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushproxy_relay_partners", Help: "Partner organisations whose tokens are accepted."}, func() float64 { return float64(partners()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushproxy_relay_apps", Help: "Registered apps."}, func() float64 { return float64(apps()) }))
}
