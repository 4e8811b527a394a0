package providers

import (
	"crypto/x509"
	"net/http"

	"github.com/rs/zerolog"
)

// Options are what a push service's Provider may be given besides its
// configuration; every provider package's New takes them as Option
// values and ignores those that do not concern it.
type Options struct {
	// Client sends the requests (e.g. one that trusts a test CA, or one
	// that goes through an egress proxy), used as it is; nil: the
	// provider's default client (30-second timeout; HTTP/2 only for APNs;
	// public addresses only for Web Push).
	Client *http.Client
	// RootCAs are the certificate authorities the default client trusts
	// (the relay passes the system roots plus its --provider-ca-file); nil
	// keeps the system roots.
	RootCAs *x509.CertPool
	// Log receives the provider's few log lines (token renewals; the log
	// provider's badges); none by default.
	Log zerolog.Logger
	// InsecureEndpoints, for tests only, lets Web Push send to http://
	// endpoints and its default client connect to loopback, private and
	// other non-public addresses (a local test push service).
	InsecureEndpoints bool
}

// Option sets one of the Options.
type Option func(*Options)

// WithHTTPClient sets Options.Client.
func WithHTTPClient(c *http.Client) Option { return func(o *Options) { o.Client = c } }

// WithRootCAs sets Options.RootCAs.
func WithRootCAs(roots *x509.CertPool) Option { return func(o *Options) { o.RootCAs = roots } }

// WithLogger sets Options.Log.
func WithLogger(l zerolog.Logger) Option { return func(o *Options) { o.Log = l } }

// WithInsecureEndpoints sets Options.InsecureEndpoints.
func WithInsecureEndpoints() Option { return func(o *Options) { o.InsecureEndpoints = true } }

// Apply returns the Options that opts set, starting from no logger.
func Apply(opts []Option) Options {
	o := Options{Log: zerolog.Nop()}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}
