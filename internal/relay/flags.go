package relay

import (
	"flag"

	"github.com/pushproxy/pushproxy/internal/providers/logpush"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Flags registers the relay's settings on fs, each flag name starting with
// prefix ("" for cmd/relay, e.g. "relay-" where other services share the
// flag set, as in pushctl standalone), and returns the Config they fill.
func Flags(fs *flag.FlagSet, prefix string) *Config {
	c := Config{
		Addr:          DefaultAddr,
		BasePath:      DefaultBasePath,
		Principal:     settings.DefaultRelayPrincipal,
		Issuer:        settings.DefaultServiceName,
		ClockSkew:     tokens.DefaultClockSkew,
		MaxBodyBytes:  DefaultMaxBodyBytes,
		TenantRate:    DefaultTenantRate,
		TenantBurst:   DefaultTenantBurst,
		ProviderLimit: Limit{Concurrency: DefaultProviderConcurrent, Timeout: DefaultProviderTimeout},
		RetryBackOff:  DefaultRetryBackOff,
		Replicas:      1,
		DevicesPath:   DefaultDevicesPath,
		LogMaxDevices: logpush.DefaultMaxDevices,
		DrainTimeout:  DefaultDrainTimeout,
	}
	p := func(name string) string { return prefix + name }
	fs.StringVar(&c.Addr, p("http-addr"), c.Addr, "host:port where the relay serves the relay protocol, its auth metadata, health and metrics")
	fs.StringVar(&c.TLSCertFile, p("tls-cert"), "", "PEM certificate chain for HTTPS (with --"+p("tls-key")+"); read again when it changes. Without it the relay serves plain HTTP: put a TLS proxy in front")
	fs.StringVar(&c.TLSKeyFile, p("tls-key"), "", "PEM private key of --"+p("tls-cert"))
	fs.StringVar(&c.BasePath, p("base-path"), c.BasePath, "path of the proxy URI: the relay answers POST <base>/service.svc/PublishOnPremNotifications and GET <base>/metadata/json/1")
	fs.StringVar(&c.Principal, p("principal"), c.Principal, "the relay's principal id: the first part of a token's audience and the client_id of the 401 challenge")
	fs.StringVar(&c.Host, p("host"), "", "the relay's host name as tokens name it in their audience <principal>/<host>@<realm>: the host name of the proxy URI the organizations use, without port (required)")
	fs.StringVar(&c.PublicURL, p("public-url"), "", "the relay's base URL as partners reach it, e.g. https://push.example.net/PushNotifications; the auth metadata document names its endpoints under it (required unless --"+p("http-addr")+" is a loopback address)")
	fs.StringVar(&c.Realm, p("realm"), "", "the one realm every token's audience must name; empty: each partner's own realm (multi-tenant)")
	fs.StringVar(&c.Issuer, p("issuer"), c.Issuer, "issuer id the relay trusts, shown in the 401 challenge as trusted_issuers=\"<issuer>@<realm>\"")
	fs.DurationVar(&c.ClockSkew, p("clock-skew"), c.ClockSkew, "clock difference tolerated on a token's nbf and exp")
	fs.Int64Var(&c.MaxBodyBytes, p("max-body-bytes"), c.MaxBodyBytes, "largest publish request body accepted (413 above)")
	fs.Float64Var(&c.TenantRate, p("tenant-rate"), c.TenantRate, "the default quota of an organization: notifications per second it may send on average (token bucket; 429 with a back-off above, counted in pushproxy_relay_tenant_notifications_total{result=\"held_back\"}). "+
		"5,000/s serves a large organization (more than twice a peak of 2,000 events/s) and keeps one partner from taking a replica to itself; a partner's registration may carry its own quota, applied without a restart; each relay replica counts on its own; negative: no limit")
	fs.IntVar(&c.TenantBurst, p("tenant-burst"), c.TenantBurst, "notifications an organization may send at once (the token bucket's size) unless its registration has its own quota; 20,000 is 4 seconds of the default rate, for the backlog of a short outage")
	fs.IntVar(&c.ProviderLimit.Concurrency, p("provider-concurrency"), c.ProviderLimit.Concurrency, "sends in progress at once to each push service (apns, fcm, webpush, log), across all requests and organizations; each organization+app gets a share of them, see --"+p("provider-share"))
	fs.DurationVar(&c.ProviderLimit.Timeout, p("provider-timeout"), c.ProviderLimit.Timeout, "how long a request waits for one push service; devices it has not answered by then get \"retry\" (keep it under the dispatcher's request timeout, 10s by default)")
	fs.Var(LimitsFlag{Limits: &c.ProviderLimits}, p("provider-limit"),
		"per push service overrides of the two flags above, kind=concurrency[/timeout], comma-separated, e.g. apns=128/15s,fcm=32")
	fs.IntVar(&c.ProviderShare, p("provider-share"), 0, "sends in progress at once to one push service for one organization+app, out of that service's concurrency (its bulkhead: a slow or failing endpoint of one organization delays only its own pushes); 0: a quarter of the concurrency")
	fs.StringVar(&c.ProviderCAFile, p("provider-ca-file"), "", "PEM bundle of certificate authorities trusted for APNs, FCM (and its token endpoint) and Web Push endpoints, besides the system roots")
	fs.BoolVar(&c.AllowInsecureEndpoints, p("allow-insecure-endpoints"), false, "for tests only: let Web Push post to http:// endpoints and to loopback, private and link-local addresses, which it refuses by default")
	fs.DurationVar(&c.RetryBackOff, p("retry-back-off"), c.RetryBackOff, "BackOffTimeInMilliseconds of a \"retry\" answer when the push service asked to slow down without a Retry-After, and the most a down push service's back-off grows to (a quarter of its outage so far, from 1s)")
	fs.IntVar(&c.Replicas, p("replicas"), c.Replicas, "replicas of the relay_partners and relay_apps buckets (1 on one NATS server, 3 on a cluster)")
	fs.BoolVar(&c.DevicesPage, p("devices-page"), false, "serve a page listing the devices of \"log\" apps with their latest badge, live (for trying pushproxy out; it shows tenants and device references)")
	fs.StringVar(&c.DevicesPath, p("devices-path"), c.DevicesPath, "path of the devices page")
	fs.IntVar(&c.LogMaxDevices, p("log-max-devices"), c.LogMaxDevices, "devices the built-in \"log\" provider remembers for the devices page")
	fs.DurationVar(&c.DrainTimeout, p("drain-timeout"), c.DrainTimeout, "how long shutdown waits for requests in flight")
	return &c
}
