package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/sources/dovecot"
	"github.com/pushproxy/pushproxy/internal/sources/native"
)

// Source is one kind of mail system that posts changes to ingest, and the
// routes it posts to. Server.HandleSource turns it into handlers that
// authenticate, check the media type and size, parse, validate, publish and
// answer.
type Source struct {
	// Name labels metrics and logs and is the Source of every event.
	Name events.Source
	// Patterns are the http.ServeMux patterns, e.g. "POST /v1/events".
	Patterns []string
	// Auth checks credentials. A nil Auth disables the source: its routes
	// answer 404 source_disabled.
	Auth Authenticator
	// MediaTypes are the accepted Content-Types without parameters (415 for
	// others); at least one.
	MediaTypes []string
	// MaxBody bounds the body (Config.MaxBodyBytes when 0).
	MaxBody int64
	// Timeout bounds the wait for JetStream (Config.PublishTimeout when 0).
	Timeout time.Duration
	// Parse reads the events of an authenticated request with the body
	// already read. See package sources for the errors it returns.
	Parse func(r *http.Request, body []byte) ([]sources.Item, error)
	// Respond writes the answer once every event is stored; nil writes
	// the Result as JSON with 200. Errors are always JSON.
	Respond func(w http.ResponseWriter, r *http.Request, res *Result)
}

// Deps are what a Server uses besides its Config.
type Deps struct {
	// Publisher stores events in JetStream.
	Publisher *Publisher
	// Log receives one line per failed request (debug: per request).
	Log zerolog.Logger
	// Registry receives ingest's metrics and serves /metrics; nil makes a
	// private one.
	Registry *prometheus.Registry
	// Ready are the checks of /readyz.
	Ready []service.ReadyFunc
	// Credentials are the scoped credentials (pushctl credentials); nil
	// means only the configured tokens and Dovecot user, which reach every
	// tenant.
	Credentials *credentials.Index
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Server is ingest's HTTP handler: the built-in sources, /healthz, /readyz,
// /metrics, and whatever Handle and HandleSource add.
type Server struct {
	cfg     Config
	set     resolved
	pub     *Publisher
	log     zerolog.Logger
	metrics *metrics
	mux     *http.ServeMux
	now     func() time.Time
	enabled []events.Source
	// ready are the checks of /readyz: Deps.Ready and AddReadyCheck's.
	ready []service.ReadyFunc
	creds *credentials.Index
	// limits bounds each credential's request rate.
	limits *RateLimits
	// bearer and basic hold the configured (legacy) tokens and Dovecot
	// password beside the scoped credentials; ReloadSecrets replaces them.
	// nil: that kind of credential is not accepted at all.
	bearer *Bearer
	basic  *Basic
	// loaded is what the files held at the last (re)load.
	loadedMu sync.Mutex
	loaded   resolved
	// background are the tasks extensions run beside the HTTP server
	// (Go): source watchers and subscription managers.
	background []func(context.Context) error
	// instance, started, activity and statusParts make Status.
	instance    string
	started     time.Time
	activity    *activity
	statusParts []func(*Status)
}

// Go runs task beside the server from the start of serving until the
// server stops; an error from task stops ingest. Extensions call it for
// sources that fetch events themselves (the IMAP watcher) and for what
// keeps sources subscribed (the Graph subscription manager).
func (s *Server) Go(task func(ctx context.Context) error) {
	s.background = append(s.background, task)
}

// New returns a server with the native and Dovecot sources (each disabled
// when cfg has no credentials for it) and the service endpoints.
func New(cfg Config, deps Deps) (*Server, error) {
	set, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("checking ingest configuration: %w", err)
	}
	if deps.Publisher == nil {
		return nil, errors.New("ingest needs a publisher")
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("registering ingest metrics: %w", err)
	}
	s := &Server{cfg: cfg, set: set, pub: deps.Publisher, log: deps.Log, metrics: m, mux: http.NewServeMux(), now: deps.Now, creds: deps.Credentials,
		instance: instanceName(), activity: newActivity(MaxTenantLabels)}
	if s.now == nil {
		s.now = time.Now
	}
	s.started = s.now().UTC()
	if err := service.Register(reg, "ingest", s.activity.last); err != nil {
		return nil, err
	}
	s.limits = NewRateLimits(cfg.CredentialRate, cfg.CredentialBurst)
	s.loaded = set
	s.bearer = newBearer(s.creds, set.nativeTokens...)
	s.basic = newBasic(s.creds, set.dovecotUser, set.dovecotPassword)
	s.ready = append(s.ready, deps.Ready...)
	service.Handle(s.mux, reg, s.checkReady)
	for _, src := range s.builtinSources() {
		s.HandleSource(src)
	}
	return s, nil
}

// AddStatus adds to what Status reports, for example an extension's own
// counts. Call it before serving.
func (s *Server) AddStatus(part func(*Status)) { s.statusParts = append(s.statusParts, part) }

// AddReadyCheck adds a check to /readyz, for example that the other parts
// of a process that runs ingest beside them are ready. Call it before
// serving.
func (s *Server) AddReadyCheck(check service.ReadyFunc) { s.ready = append(s.ready, check) }

// checkReady runs every readiness check and joins what fails.
func (s *Server) checkReady(ctx context.Context) error {
	var errs []error
	for _, check := range s.ready {
		if err := check(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP serves a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Handle adds a route that is not a source, such as the subscriptions API.
// The handler may use Chain with RequireAuth, RequireMediaType, LimitBody,
// ReadBody and Reject.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleSource adds the routes of src.
func (s *Server) HandleSource(src Source) {
	h := s.SourceHandler(src)
	for _, p := range src.Patterns {
		s.mux.Handle(p, h)
	}
}

// SourceHandler returns the handler of src without adding a route, for a
// source that wraps it (e.g. to answer a handshake first) and adds it with
// Handle. src.Patterns is not used.
func (s *Server) SourceHandler(src Source) http.Handler {
	if src.MaxBody == 0 {
		src.MaxBody = s.cfg.MaxBodyBytes
	}
	if src.Timeout == 0 {
		src.Timeout = s.cfg.PublishTimeout
	}
	var h http.Handler
	if src.Auth == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			Reject(w, &httpjson.Error{Status: http.StatusNotFound, Code: CodeDisabled,
				Message: fmt.Sprintf("the %s source is not enabled on this server: configure its credentials", src.Name)})
		})
	} else {
		s.enabled = append(s.enabled, src.Name)
		h = Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveSource(&src, w, r) }),
			RequireAuth(src.Auth), s.limits.Middleware(), RequireMediaType(src.MediaTypes...), LimitBody(src.MaxBody))
	}
	return s.instrument(src.Name, h)
}

// NativeAuth is the authenticator of the native API (its Bearer tokens),
// for routes that the same clients call, such as the subscriptions API.
func (s *Server) NativeAuth() Authenticator {
	if s.bearer == nil {
		return nil
	}
	return s.bearer
}

// ReloadSecrets reads the token and password files again
// (Config.NativeTokenFile, Config.DovecotPasswordFile) and puts what they
// hold in place of what was read before, logging what changed. A file
// that cannot be read, or a configuration that no longer checks out,
// changes nothing. A source that had no credentials at the start stays
// disabled: restart to enable one.
func (s *Server) ReloadSecrets() error {
	set, err := s.cfg.resolve()
	if err != nil {
		return fmt.Errorf("reloading ingest credentials files: %w", err)
	}
	s.loadedMu.Lock()
	defer s.loadedMu.Unlock()
	if s.bearer != nil && !slices.Equal(set.nativeTokens, s.loaded.nativeTokens) {
		n := s.bearer.SetTokens(set.nativeTokens...)
		s.log.Info().Int("tokens", n).Str("file", s.cfg.NativeTokenFile).Msg("native tokens reloaded")
	}
	if s.basic != nil && (set.dovecotUser != s.loaded.dovecotUser || set.dovecotPassword != s.loaded.dovecotPassword) {
		s.basic.SetPassword(set.dovecotUser, set.dovecotPassword)
		s.log.Info().Str("file", s.cfg.DovecotPasswordFile).Msg("Dovecot password reloaded")
	}
	s.loaded = set
	return nil
}

// Log is the server's logger, for routes added with Handle.
func (s *Server) Log() zerolog.Logger { return s.log }

// Enabled lists the sources added so far that have credentials, for logs.
func (s *Server) Enabled() []events.Source { return append([]events.Source(nil), s.enabled...) }

// instrument counts and logs the requests of a source route. Failures
// worth an operator's attention are logged above debug: 5xx (warn) and
// rejected credentials (info). No event content is logged.
func (s *Server) instrument(source events.Source, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		s.metrics.request(string(source), rec)
		level := zerolog.DebugLevel
		switch {
		case rec.status >= 500:
			level = zerolog.WarnLevel
		case rec.status == http.StatusUnauthorized || rec.status == http.StatusForbidden:
			level = zerolog.InfoLevel
		}
		ev := s.log.WithLevel(level).Str("source", string(source)).Int("status", rec.status).
			Str("remote", r.RemoteAddr).Dur("took", time.Since(start))
		if rec.credential != "" {
			ev = ev.Str("credential", rec.credential)
		}
		if rec.err != nil {
			ev = ev.Str("code", rec.err.Code).Str("error", rec.err.Message)
		}
		ev.Msg("request")
	})
}

// builtinSources are the native API and the two Dovecot drivers.
func (s *Server) builtinSources() []Source {
	var dovecotAuth Authenticator
	if s.basic != nil {
		dovecotAuth = s.basic
	}
	return []Source{
		{
			Name:       events.SourceNative,
			Patterns:   []string{"POST /v1/events"},
			Auth:       s.NativeAuth(),
			MediaTypes: []string{native.MediaJSON, native.MediaNDJSON},
			Parse: func(r *http.Request, body []byte) ([]sources.Item, error) {
				return native.Parse(body, MediaType(r), native.Options{MaxEvents: s.cfg.MaxEvents})
			},
		},
		{
			Name:       events.SourceDovecotOX,
			Patterns:   []string{"PUT /v1/dovecot/ox", "POST /v1/dovecot/ox"},
			Auth:       dovecotAuth,
			MediaTypes: []string{"application/json"},
			Timeout:    s.cfg.OXTimeout,
			Parse:      func(_ *http.Request, body []byte) ([]sources.Item, error) { return dovecot.ParseOX(body) },
		},
		{
			Name:       events.SourceDovecotLua,
			Patterns:   []string{"POST /v1/dovecot/lua"},
			Auth:       dovecotAuth,
			MediaTypes: []string{"application/json"},
			Parse: func(_ *http.Request, body []byte) ([]sources.Item, error) {
				return dovecot.ParseLua(body, dovecot.LuaOptions{MaxEvents: s.cfg.MaxEvents})
			},
		},
	}
}
