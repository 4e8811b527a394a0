package ingest

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/flagenv"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// Config is what an operator sets for ingest. The zero value of a field
// means its default (see DefaultConfig); a source without credentials is
// disabled.
type Config struct {
	// Addr is the host:port the HTTP server listens on.
	Addr string

	// NativeTokens are the Bearer tokens accepted on /v1/events (several,
	// so a token can be rotated). NativeTokenFile adds one token per line.
	NativeTokens    []string
	NativeTokenFile string

	// DovecotUser and DovecotPassword are the Basic credentials of both
	// Dovecot endpoints; DovecotPasswordFile holds the password instead.
	DovecotUser         string
	DovecotPassword     string
	DovecotPasswordFile string

	// DefaultTenant is the tenant of events whose source names none and
	// whose user address has no domain. With ForceDefaultTenant it is the
	// tenant of every such event, whatever the address's domain.
	DefaultTenant      string
	ForceDefaultTenant bool

	// MaxBodyBytes bounds a request body (413 above it).
	MaxBodyBytes int64
	// MaxEvents bounds the events of one request (413 above it).
	MaxEvents int

	// PublishTimeout bounds the wait for JetStream's acknowledgements of
	// one request; past it the answer is 503.
	PublishTimeout time.Duration
	// OXTimeout is the shorter bound for Dovecot's OX driver, which gives up
	// after 2 s and delays mail delivery while it waits.
	OXTimeout time.Duration
	// RetryAfter is the Retry-After of a 503 answer.
	RetryAfter time.Duration
	// DrainTimeout is how long shutdown waits for requests in flight.
	DrainTimeout time.Duration

	// CredentialRate is how many requests per second one credential may
	// make on average (429 with Retry-After above; 0: no limit), and
	// CredentialBurst how many at once.
	CredentialRate  float64
	CredentialBurst int

	// AllowPrivateEndpoints accepts Web Push subscriptions whose endpoint
	// is on a loopback or private address (tests only).
	AllowPrivateEndpoints bool

	// DeviceLimits bound the devices one user and one tenant may have
	// subscribed at once (409 above; 0: no limit).
	DeviceLimits subscriptions.Limits

	// ReloadInterval is how often NativeTokenFile and DovecotPasswordFile
	// are looked at (5 s when zero); a changed file is read again and
	// applied without a restart.
	ReloadInterval time.Duration
}

// secretFiles are the credential files ingest reads, to watch.
func (c *Config) secretFiles() []string {
	var files []string
	for _, f := range []string{c.NativeTokenFile, c.DovecotPasswordFile} {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}

// DefaultConfig returns the defaults of every field.
func DefaultConfig() Config {
	return Config{
		Addr:           ":8025",
		MaxBodyBytes:   1 << 20,
		MaxEvents:      1000,
		PublishTimeout: 5 * time.Second,
		OXTimeout:      1500 * time.Millisecond,
		RetryAfter:     5 * time.Second,
		DrainTimeout:   20 * time.Second,
		// One Dovecot of a large host sends a request per delivery, all
		// with one credential: generous, so that it never caps a normal
		// deployment, but a leaked credential cannot flood the stream.
		CredentialRate:  10000,
		CredentialBurst: 20000,
		DeviceLimits:    subscriptions.DefaultLimits,
		ReloadInterval:  5 * time.Second,
	}
}

// Flags registers the ingest flags on fs and returns the config they fill,
// starting from DefaultConfig. Commands that embed ingest (cmd/ingest,
// pushctl standalone) share them.
func Flags(fs *flag.FlagSet) *Config {
	c := DefaultConfig()
	fs.StringVar(&c.Addr, "http-addr", c.Addr, "host:port of the HTTP server for sources, health and metrics")
	fs.Var((*flagenv.StringList)(&c.NativeTokens), "native-token", "Bearer token(s) accepted on POST /v1/events, comma-separated; without any token the native API is disabled")
	fs.StringVar(&c.NativeTokenFile, "native-token-file", "", "file with more native Bearer tokens, one per line")
	fs.StringVar(&c.DovecotUser, "dovecot-user", "", "Basic user name Dovecot sends (from the OX driver URL, or the Lua script's pushproxy_user); without it the Dovecot endpoints are disabled")
	fs.StringVar(&c.DovecotPassword, "dovecot-password", "", "Basic password Dovecot sends")
	fs.StringVar(&c.DovecotPasswordFile, "dovecot-password-file", "", "file holding the Dovecot password (instead of --dovecot-password)")
	fs.StringVar(&c.DefaultTenant, "default-tenant", "", "tenant (organisation domain) of events whose user has no domain, e.g. Dovecot users without @domain")
	fs.BoolVar(&c.ForceDefaultTenant, "force-default-tenant", false, "use --default-tenant for every event that names no tenant, even when the user's address has a domain")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest request body accepted (413 above)")
	fs.IntVar(&c.MaxEvents, "max-events", c.MaxEvents, "most events in one request or Dovecot transaction (413 above)")
	fs.DurationVar(&c.PublishTimeout, "publish-timeout", c.PublishTimeout, "how long a request waits for JetStream to acknowledge its events before answering 503")
	fs.DurationVar(&c.OXTimeout, "dovecot-ox-timeout", c.OXTimeout, "how long a request of Dovecot's OX driver waits for JetStream before answering 503 (Dovecot waits at most 2s, delaying delivery meanwhile)")
	fs.DurationVar(&c.RetryAfter, "retry-after", c.RetryAfter, "Retry-After sent with 503 answers while JetStream is unavailable")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "how long shutdown waits for requests in flight")
	fs.Float64Var(&c.CredentialRate, "credential-rate", c.CredentialRate, "requests per second each credential may make on average (429 with Retry-After above); 0: no limit")
	fs.IntVar(&c.CredentialBurst, "credential-burst", c.CredentialBurst, "requests each credential may make at once above --credential-rate")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", c.ReloadInterval, "how often --native-token-file and --dovecot-password-file are looked at; a changed file is applied without a restart")
	fs.IntVar(&c.DeviceLimits.PerUser, "max-devices-per-user", c.DeviceLimits.PerUser, "devices one user may have subscribed at once (409 for one more); 0: no limit")
	fs.IntVar(&c.DeviceLimits.PerTenant, "max-devices-per-tenant", c.DeviceLimits.PerTenant, "devices one tenant may have subscribed at once (409 for one more; each ingest recounts a tenant at most once a minute, one count at a time); 0: no limit")
	fs.BoolVar(&c.AllowPrivateEndpoints, "allow-private-endpoints", false, "accept Web Push subscriptions whose endpoint is on a loopback or private address (for tests; a real push service is never there)")
	return &c
}

// resolved is a checked config's credentials, read from their files, and
// its normalised default tenant.
type resolved struct {
	nativeTokens    []string
	dovecotUser     string
	dovecotPassword string
	defaultTenant   string
}

// resolve validates the config and reads its credential files.
func (c *Config) resolve() (resolved, error) {
	var errs []error
	if c.MaxBodyBytes < 1 {
		errs = append(errs, fmt.Errorf("max body bytes must be positive, got %d", c.MaxBodyBytes))
	}
	if c.MaxEvents < 1 {
		errs = append(errs, fmt.Errorf("max events must be positive, got %d", c.MaxEvents))
	}
	if c.CredentialRate < 0 || (c.CredentialRate > 0 && c.CredentialBurst < 1) {
		errs = append(errs, fmt.Errorf("credential rate %g must not be negative, and its burst %d at least 1", c.CredentialRate, c.CredentialBurst))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("reload interval must not be negative, got %s", c.ReloadInterval))
	}
	if c.DeviceLimits.PerUser < 0 || c.DeviceLimits.PerTenant < 0 {
		errs = append(errs, fmt.Errorf("device limits must not be negative, got %d per user and %d per tenant", c.DeviceLimits.PerUser, c.DeviceLimits.PerTenant))
	}
	if c.PublishTimeout <= 0 || c.OXTimeout <= 0 || c.RetryAfter < time.Second {
		errs = append(errs, errors.New("publish timeouts must be positive and retry-after at least 1s"))
	}
	cr := resolved{
		nativeTokens:    c.NativeTokens,
		dovecotUser:     c.DovecotUser,
		dovecotPassword: c.DovecotPassword,
		defaultTenant:   strings.TrimSuffix(strings.ToLower(strings.TrimSpace(c.DefaultTenant)), "."),
	}
	if cr.defaultTenant != "" {
		if err := events.ValidateTenant(cr.defaultTenant); err != nil {
			errs = append(errs, fmt.Errorf("default tenant: %w", err))
		}
	} else if c.ForceDefaultTenant {
		errs = append(errs, errors.New("force-default-tenant needs a default tenant"))
	}
	if c.NativeTokenFile != "" {
		text, err := readSecret(c.NativeTokenFile)
		if err != nil {
			errs = append(errs, err)
		}
		for _, line := range strings.Split(text, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				cr.nativeTokens = append(cr.nativeTokens, line)
			}
		}
	}
	if c.DovecotPasswordFile != "" {
		text, err := readSecret(c.DovecotPasswordFile)
		if err != nil {
			errs = append(errs, err)
		}
		cr.dovecotPassword = strings.TrimRight(text, "\r\n")
	}
	if (cr.dovecotUser == "") != (cr.dovecotPassword == "") {
		errs = append(errs, errors.New("the Dovecot endpoints need both a user and a password"))
	}
	return cr, errors.Join(errs...)
}

func readSecret(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading credentials file: %w", err)
	}
	return string(data), nil
}
