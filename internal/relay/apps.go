package relay

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/apns"
	"github.com/pushproxy/pushproxy/internal/providers/fcm"
	"github.com/pushproxy/pushproxy/internal/providers/logpush"
	"github.com/pushproxy/pushproxy/internal/providers/webpush"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
)

// Router finds the provider that delivers to the devices of an app.
type Router interface {
	// Route returns the provider of appID's devices. An error matching
	// ErrUnknownApp means no such app is registered; any other error means
	// the app is registered but cannot be served now.
	Route(appID string) (providers.Provider, error)
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
	// Push providers (for instance one that trusts a test CA or goes
	// through an egress proxy); otherwise each uses its own default.
	HTTPClient *http.Client
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
	switch app.Provider {
	case registry.KindAPNs:
		c := app.APNs
		o := []apns.Option{apns.WithLogger(log)}
		if opts.HTTPClient != nil {
			o = append(o, apns.WithHTTPClient(opts.HTTPClient))
		}
		return built(apns.New(apns.Config{KeyFile: c.KeyFile, KeyID: c.KeyID, TeamID: c.TeamID, Topic: c.Topic, Environment: c.Environment, Host: c.Host}, o...))
	case registry.KindFCM:
		c := app.FCM
		o := []fcm.Option{fcm.WithLogger(log)}
		if opts.HTTPClient != nil {
			o = append(o, fcm.WithHTTPClient(opts.HTTPClient))
		}
		return built(fcm.New(fcm.Config{CredentialsFile: c.CredentialsFile, ProjectID: c.ProjectID, BaseURL: c.BaseURL, TokenURL: c.TokenURL}, o...))
	case registry.KindWebPush:
		c := app.WebPush
		var o []webpush.Option
		if opts.HTTPClient != nil {
			o = append(o, webpush.WithHTTPClient(opts.HTTPClient))
		}
		return built(webpush.New(webpush.Config{PrivateKeyFile: c.PrivateKeyFile, PublicKeyFile: c.PublicKeyFile, Subject: c.Subject}, o...))
	case registry.KindLog:
		if opts.Log != nil {
			return opts.Log, nil
		}
		return logpush.New(logpush.Config{}, logpush.WithLogger(log)), nil
	}
	return nil, fmt.Errorf("app %s: unknown provider %q", app.AppID, app.Provider)
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

// appEntry is the provider of one app, or why there is none.
type appEntry struct {
	provider providers.Provider
	err      error
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

// apply builds the provider of a new or changed app, or drops a removed
// one. It fits registry.Store.WatchApps.
func (s *providerSet) apply(appID string, app *registry.App) {
	var next appEntry
	if app != nil {
		p, err := NewProvider(*app, s.opts)
		next = appEntry{provider: p, err: err}
		if err != nil {
			s.log.Error().Err(err).Str("app_id", appID).Str("provider", app.Provider).Msg("cannot set up the app's push service; its devices get \"retry\" until this is fixed")
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
	if had && old.provider != nil && old.provider != s.opts.Log {
		closeProvider(old.provider)
	}
	if app == nil && had {
		s.log.Info().Str("app_id", appID).Msg("app removed")
	}
}

// Route implements Router.
func (s *providerSet) Route(appID string) (providers.Provider, error) {
	s.mu.RLock()
	e, ok := s.apps[appID]
	s.mu.RUnlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("appId %q: %w", appID, ErrUnknownApp)
	case e.err != nil:
		return nil, fmt.Errorf("appId %q: %w", appID, ErrAppUnavailable)
	}
	return e.provider, nil
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
		if e.provider != nil && e.provider != s.opts.Log {
			closeProvider(e.provider)
		}
	}
}
