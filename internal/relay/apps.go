package relay

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/apns"
	"github.com/pushproxy/pushproxy/internal/providers/fcm"
	"github.com/pushproxy/pushproxy/internal/providers/logpush"
	"github.com/pushproxy/pushproxy/internal/providers/webpush"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
)

// Router finds the provider that delivers to the devices of an app for an
// organization.
type Router interface {
	// Route returns the provider of appID's devices for organization. An
	// error matching ErrUnknownApp means no such app is registered, one
	// matching registry.ErrNotBound that the app is not bound to the
	// organization, and one matching ErrAppUnavailable that its provider
	// could not be set up. Each is an app fault: the relay answers it for
	// the recipient and forwards nothing.
	Route(organization, appID string) (providers.Provider, error)
}

// Errors of Route.
var (
	// ErrUnknownApp means the appId is not registered at this relay.
	ErrUnknownApp = errors.New("app not registered at this relay")
	// ErrAppUnavailable means the app is registered but its provider could
	// not be set up (for instance its key file is missing).
	ErrAppUnavailable = errors.New("app's push service is not available")
)

// ProviderOptions are what NewProvider needs besides the registration.
type ProviderOptions struct {
	// Log is the built-in provider that serves apps of kind "log". When nil,
	// such apps get a provider of their own.
	Log *logpush.Provider
	// HTTPClient, when set, is the HTTP client of the APNs, FCM and Web
	// Push providers, used as it is (RootCAs and the Web Push address check
	// do not apply); otherwise each provider builds its own, with its own
	// connections.
	HTTPClient *http.Client
	// RootCAs, when set, are the certificate authorities the providers'
	// own clients trust (see ProviderRoots); nil means the system roots.
	RootCAs *x509.CertPool
	// AllowInsecureEndpoints lets Web Push post to http:// endpoints and to
	// non-public addresses (tests only).
	AllowInsecureEndpoints bool
	// Logger receives the providers' own logs (token renewals, badges of
	// the built-in provider).
	Logger zerolog.Logger
}

// NewProvider builds the provider of a registered app, reading its
// credential files.
func NewProvider(app registry.App, opts ProviderOptions) (providers.Provider, error) {
	if err := app.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger.With().Str("app_id", app.AppID).Logger()
	o := []providers.Option{providers.WithLogger(log), providers.WithRootCAs(opts.RootCAs)}
	if opts.AllowInsecureEndpoints {
		o = append(o, providers.WithInsecureEndpoints())
	}
	if opts.HTTPClient != nil {
		o = append(o, providers.WithHTTPClient(opts.HTTPClient))
	}
	switch app.Provider {
	case registry.KindAPNs:
		c := app.APNs
		return built(apns.New(apns.Config{KeyFile: c.KeyFile, KeyID: c.KeyID, TeamID: c.TeamID, Topic: c.Topic, Environment: c.Environment, Host: c.Host}, o...))
	case registry.KindFCM:
		c := app.FCM
		return built(fcm.New(fcm.Config{CredentialsFile: c.CredentialsFile, ProjectID: c.ProjectID, BaseURL: c.BaseURL, TokenURL: c.TokenURL}, o...))
	case registry.KindWebPush:
		c := app.WebPush
		return built(webpush.New(webpush.Config{PrivateKeyFile: c.PrivateKeyFile, PublicKeyFile: c.PublicKeyFile, Subject: c.Subject}, o...))
	case registry.KindLog:
		if opts.Log != nil {
			return opts.Log, nil
		}
		return logpush.New(logpush.Config{}, o...), nil
	}
	return nil, fmt.Errorf("app %s: unknown provider %q", app.AppID, app.Provider)
}

// ProviderRoots returns the system's certificate authorities plus those of
// the PEM bundle caFile, for the providers' connections; nil (the system
// roots) when caFile is empty. A file without any certificate is an error,
// so that a wrong path or format is found at start.
func ProviderRoots(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the provider CA file: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("provider CA file %s has no PEM certificate", caFile)
	}
	return roots, nil
}

// built turns a constructor's result into a Provider, so that a failed
// constructor gives a nil interface rather than one holding a nil pointer.
func built[P providers.Provider](p P, err error) (providers.Provider, error) {
	if err != nil {
		return nil, fmt.Errorf("setting up the push service: %w", err)
	}
	return p, nil
}

// CheckApp builds the provider of app once, reading its credential files,
// and reports what is wrong with them. pushctl uses it before registering
// an app.
func CheckApp(app registry.App) error {
	p, err := NewProvider(app, ProviderOptions{Logger: zerolog.Nop()})
	if err != nil {
		return err
	}
	closeProvider(p)
	return nil
}

// closeProvider releases a provider's connections if it holds any.
func closeProvider(p providers.Provider) {
	if c, ok := p.(interface{ Close() }); ok {
		c.Close()
	}
}

// appEntry is the providers of one app, one per organization it is bound
// to, or why there are none, and the registration they were built from.
// Each organization+app has a provider of its own, hence its own
// connections (HTTP/2 to APNs, FCM, Web Push) and token cache: a push
// service that is slow for one organization's sends does not hold up
// another's on a shared connection.
type appEntry struct {
	app   registry.App
	byOrg map[string]providers.Provider // anyOrg for an app bound to none
	err   error
}

// anyOrg is the byOrg key of an app bound to no organization.
const anyOrg = ""

// close releases the connections of e's providers.
func (e appEntry) close(shared providers.Provider) {
	for _, p := range e.byOrg {
		if p != shared {
			closeProvider(p)
		}
	}
}

// providerSet is the Router of a running relay: the provider of every
// registered app, rebuilt when its registration changes.
type providerSet struct {
	opts ProviderOptions
	log  zerolog.Logger

	mu   sync.RWMutex
	apps map[string]appEntry
}

var _ Router = (*providerSet)(nil)

func newProviderSet(opts ProviderOptions, log zerolog.Logger) *providerSet {
	return &providerSet{opts: opts, log: log, apps: map[string]appEntry{}}
}

// build makes the providers of app, one per organization it is bound to
// (one for anyOrg when it is bound to none).
func (s *providerSet) build(app registry.App) appEntry {
	orgs := app.Organizations
	if len(orgs) == 0 {
		orgs = []string{anyOrg}
	}
	e := appEntry{app: app, byOrg: make(map[string]providers.Provider, len(orgs))}
	for _, org := range orgs {
		p, err := NewProvider(app, s.opts)
		if err != nil {
			e.close(s.opts.Log)
			return appEntry{app: app, err: err}
		}
		e.byOrg[org] = p
	}
	return e
}

// apply builds the providers of a new or changed app, or drops a removed
// one. It fits registry.Store.WatchApps.
func (s *providerSet) apply(appID string, app *registry.App) {
	var next appEntry
	if app != nil {
		next = s.build(*app)
		if err := next.err; err != nil {
			s.log.Error().Err(err).Str("app_id", appID).Str("provider", app.Provider).Msg("cannot set up the app's push service; its devices get \"appFault\" until this is fixed")
		} else {
			s.log.Info().Str("app_id", appID).Str("provider", app.Provider).Msg("app loaded")
		}
	}
	s.mu.Lock()
	old, had := s.apps[appID]
	if app != nil {
		s.apps[appID] = next
	} else {
		delete(s.apps, appID)
	}
	s.mu.Unlock()
	if had {
		old.close(s.opts.Log)
	}
	if app == nil && had {
		s.log.Info().Str("app_id", appID).Msg("app removed")
	}
}

// Route implements Router.
func (s *providerSet) Route(organization, appID string) (providers.Provider, error) {
	s.mu.RLock()
	e, ok := s.apps[appID]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("appId %q: %w", appID, ErrUnknownApp)
	}
	if err := e.app.Serves(organization); err != nil {
		return nil, err
	}
	if e.err != nil {
		return nil, fmt.Errorf("appId %q: %w", appID, ErrAppUnavailable)
	}
	p, ok := e.byOrg[organization]
	if !ok {
		p, ok = e.byOrg[anyOrg]
	}
	if !ok {
		return nil, fmt.Errorf("appId %q: %w", appID, ErrAppUnavailable)
	}
	return p, nil
}

// Len is the number of registered apps.
func (s *providerSet) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.apps)
}

// Close releases every provider's connections.
func (s *providerSet) Close() {
	s.mu.Lock()
	apps := s.apps
	s.apps = map[string]appEntry{}
	s.mu.Unlock()
	for _, e := range apps {
		e.close(s.opts.Log)
	}
}
