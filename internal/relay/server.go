package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Limits of a publish request's fields.
const (
	// maxDeviceID bounds a deviceId: an APNs token is 64 to 200 hex
	// characters, an FCM token about 160, a Web Push subscription a few
	// hundred bytes of JSON.
	maxDeviceID = 4096
	// maxShortField bounds ids, appIds and the language.
	maxShortField = 256
)

// unavailableBackOff is the back-off of a 503 when the relay itself fails.
const unavailableBackOff = 5 * time.Second

// Server answers the relay protocol. Make one with NewServer and add its
// handlers to a mux with Register.
type Server struct {
	cfg      Config
	verifier *tokens.Verifier
	router   Router
	tenants  *tenantLimiter
	lanes    *lanes
	metrics  *metrics
	log      zerolog.Logger
	now      func() time.Time
	stall    *stallGuard
	outages  *outages
}

// NewServer returns a Server with cfg (unset fields at their defaults) that
// verifies tokens with verifier, finds providers with router and registers
// its metrics on reg.
func NewServer(cfg Config, verifier *tokens.Verifier, router Router, reg prometheus.Registerer, log zerolog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("relay configuration: %w", err)
	}
	if verifier == nil || router == nil {
		return nil, errors.New("relay server: a token verifier and a router are required")
	}
	s := &Server{
		cfg:      cfg,
		verifier: verifier,
		router:   router,
		tenants:  newTenantLimiter(cfg.TenantRate, cfg.TenantBurst, cfg.TenantQuotas),
		lanes:    newLanes(cfg.ProviderLimits, cfg.ProviderLimit, cfg.ProviderShare),
		log:      log,
		now:      time.Now,
		stall:    newStallGuard(),
		outages:  newOutages(cfg.RetryBackOff),
	}
	m, err := newMetrics(reg, s.tenants, func() map[appKey]time.Duration { return s.outages.ages(s.now()) })
	if err != nil {
		return nil, fmt.Errorf("registering relay metrics: %w", err)
	}
	s.metrics = m
	return s, nil
}

// WatchStalls watches, until ctx ends, for pauses of the whole process
// (its host stopped it, or it was starved of CPU): publish requests read
// during one, or within 2 s after it, are refused with a 503 to retry
// (see stallGuard). Without it nothing is refused.
func (s *Server) WatchStalls(ctx context.Context) {
	s.stall.watch(ctx, func(gap time.Duration) {
		s.log.Warn().Dur("gap", gap).Dur("refusing_for", stallGrace).
			Msg("the relay did not run for a while: refusing the requests that waited meanwhile, their counts may be old")
	})
}

// PublishPath is the path of the publish endpoint.
func (s *Server) PublishPath() string { return s.cfg.BasePath + relayproto.PublishPath }

// MetadataPath is the path of the auth metadata document.
func (s *Server) MetadataPath() string { return s.cfg.BasePath + relayproto.MetadataPath }

// Register adds the publish endpoint and the auth metadata document to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+s.PublishPath(), s.publish)
	mux.HandleFunc("GET "+s.MetadataPath(), s.metadata)
}

// publish handles one publish request.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	requestID := uuid.NewString()
	w.Header().Set("request-id", requestID)
	clientRequestID := r.Header.Get(relayproto.HeaderClientRequestID)
	if strings.EqualFold(r.Header.Get(relayproto.HeaderReturnClientRequestID), "true") && clientRequestID != "" {
		w.Header().Set(relayproto.HeaderClientRequestID, clientRequestID)
	}
	log := s.log.With().Str("request_id", requestID).Str("client_request_id", clientRequestID).Logger()
	read := s.stall.mark()
	if s.stall.stalled() {
		// The connection is closed after the answer (HTTP/2: GOAWAY), so
		// that the retry dials again: behind a balancer, it may reach a
		// replica that did not pause, and the requests that waited in this
		// connection through the pause are dropped with it.
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "1")
		s.fault(w, http.StatusServiceUnavailable, outcomeStalled, relayproto.Fault{
			Message:                   "The relay has just run again after a pause: requests that waited through it are refused, as newer counts may have been sent since. Try again.",
			CanRetry:                  true,
			BackOffTimeInMilliseconds: backOffMillis(pausedBackOff),
		})
		return
	}

	claims, ok := s.authenticate(w, r, log)
	if !ok {
		return
	}
	log = log.With().Str("tenant", claims.Organization).Logger()
	req, ok := s.decode(w, r, log)
	if !ok {
		return
	}
	cost := 0
	for _, n := range req.Notifications {
		if !n.IsMonitoring() {
			cost++
		}
	}
	ok, wait, quota := s.tenants.reserve(claims.Organization, cost, start)
	if cost > 0 {
		s.metrics.quota(claims.Organization, cost, !ok)
	}
	if !ok {
		s.metrics.rateLimited.WithLabelValues(claims.Organization).Inc()
		log.Warn().Int("notifications", cost).Dur("back_off", wait).Float64("quota", float64(quota.limit)).Int("burst", quota.burst).Msg("tenant over its quota")
		s.fault(w, http.StatusTooManyRequests, outcomeRateLimited, relayproto.Fault{
			Message:                   fmt.Sprintf("Too many notifications for %s: its quota at the relay is %g per second with bursts of %d. Try again later.", claims.Organization, float64(quota.limit), quota.burst),
			CanRetry:                  true,
			BackOffTimeInMilliseconds: backOffMillis(wait),
		})
		return
	}

	resp, tally := s.deliver(r.Context(), claims.Organization, req, read, log)
	s.metrics.requests.WithLabelValues(outcomeOK).Inc()
	s.metrics.requestDuration.Observe(s.now().Sub(start).Seconds())
	log.Debug().
		Int("notifications", len(req.Notifications)).
		Int("delivered", tally[relayproto.DeviceDelivered]).
		Int("gone", tally[relayproto.DeviceGone]).
		Int("retry", tally[relayproto.DeviceRetry]).
		Int("rejected", tally[relayproto.DeviceRejected]).
		Dur("duration", s.now().Sub(start)).
		Msg("publish answered")
	httpjson.Write(w, http.StatusOK, resp)
}

// authenticate verifies the bearer token. On failure it answers 401 with
// the challenge (or 503 if the relay could not check the token) and
// reports false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, log zerolog.Logger) (*tokens.Claims, bool) {
	raw, err := tokens.BearerToken(r.Header.Get("Authorization"))
	var claims *tokens.Claims
	if err == nil {
		claims, err = s.verifier.Verify(r.Context(), raw)
	}
	switch {
	case err == nil:
		return claims, true
	case errors.Is(err, tokens.ErrRejected):
		reason := authReason(err)
		s.metrics.authFailures.WithLabelValues(reason).Inc()
		log.Info().Str("reason", reason).Err(err).Msg("token rejected")
		w.Header().Set("WWW-Authenticate", tokens.Challenge(s.cfg.Principal, s.cfg.trustedIssuer(), err))
		// The same answer for every rejection: what exactly was wrong (an
		// unknown thumbprint, or a known one with a bad signature, and
		// whose) goes to the log, never to the caller.
		msg := "The request has no bearer token: an S2S token of a registered partner organisation is required."
		if !errors.Is(err, tokens.ErrMissingToken) {
			msg = "The S2S token was rejected; the relay's log says why."
		}
		s.fault(w, http.StatusUnauthorized, outcomeUnauthorized, relayproto.Fault{Message: msg})
	default:
		log.Error().Err(err).Msg("cannot verify token")
		w.Header().Set("Retry-After", strconv.Itoa(int(unavailableBackOff/time.Second)))
		s.fault(w, http.StatusServiceUnavailable, outcomeUnavailable, relayproto.Fault{
			Message:                   "The relay cannot verify tokens right now.",
			CanRetry:                  true,
			BackOffTimeInMilliseconds: backOffMillis(unavailableBackOff),
		})
	}
	return nil, false
}

// decode reads and checks the request body. On failure it answers 400,
// 413, 415 or 422 and reports false.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, log zerolog.Logger) (*relayproto.Request, bool) {
	fail := func(status int, outcome, msg string) (*relayproto.Request, bool) {
		log.Info().Int("status", status).Str("problem", msg).Msg("publish request refused")
		s.fault(w, status, outcome, relayproto.Fault{Message: msg})
		return nil, false
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return fail(http.StatusUnsupportedMediaType, outcomeUnsupportedMediaType,
			fmt.Sprintf("Content-Type %q is not supported: send application/json.", r.Header.Get("Content-Type")))
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	dec := json.NewDecoder(body)
	var req relayproto.Request
	err = dec.Decode(&req)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = extra
			if err == nil {
				err = errors.New("unexpected data after the JSON object")
			}
		}
	}
	var (
		tooBig    *http.MaxBytesError
		typeError *json.UnmarshalTypeError
	)
	switch {
	case err == nil:
	case errors.As(err, &tooBig):
		return fail(http.StatusRequestEntityTooLarge, outcomeTooLarge, fmt.Sprintf("The request body is larger than %d bytes: send fewer notifications per request.", tooBig.Limit))
	case errors.As(err, &typeError):
		return fail(http.StatusUnprocessableEntity, outcomeInvalid, fmt.Sprintf("Field %s: a JSON %s cannot be a %s.", typeError.Field, typeError.Value, typeError.Type))
	default:
		return fail(http.StatusBadRequest, outcomeBadRequest, "The request body is not valid JSON: "+err.Error()+".")
	}
	if err := validate(&req); err != nil {
		return fail(http.StatusUnprocessableEntity, outcomeInvalid, err.Error())
	}
	return &req, true
}

// validate checks the fields of a decoded request.
func validate(req *relayproto.Request) error {
	switch n := len(req.Notifications); {
	case n == 0:
		return errors.New("notifications: at least one notification is required")
	case n > relayproto.MaxNotificationsPerRequest:
		return fmt.Errorf("notifications: %d notifications, the limit is %d per request", n, relayproto.MaxNotificationsPerRequest)
	}
	for i, n := range req.Notifications {
		at := fmt.Sprintf("notifications[%d]", i)
		switch {
		case n.ID == "":
			return fmt.Errorf("%s.id: required", at)
		case len(n.ID) > maxShortField:
			return fmt.Errorf("%s.id: longer than %d bytes", at, maxShortField)
		case n.Payload.UnseenEmailCount < 0:
			return fmt.Errorf("%s.payload.unseenEmailCount: %d is negative", at, n.Payload.UnseenEmailCount)
		case len(n.Payload.Language) > maxShortField:
			return fmt.Errorf("%s.payload.language: longer than %d bytes", at, maxShortField)
		case len(n.Recipients) == 0:
			return fmt.Errorf("%s.recipients: at least one recipient is required", at)
		case len(n.Recipients) > relayproto.MaxRecipients:
			return fmt.Errorf("%s.recipients: %d recipients, the limit is %d", at, len(n.Recipients), relayproto.MaxRecipients)
		}
		for j, r := range n.Recipients {
			at := fmt.Sprintf("%s.recipients[%d]", at, j)
			switch {
			case r.AppID == "":
				return fmt.Errorf("%s.appId: required", at)
			case len(r.AppID) > maxShortField:
				return fmt.Errorf("%s.appId: longer than %d bytes", at, maxShortField)
			case r.DeviceID == "":
				return fmt.Errorf("%s.deviceId: required", at)
			case len(r.DeviceID) > maxDeviceID:
				return fmt.Errorf("%s.deviceId: longer than %d bytes", at, maxDeviceID)
			}
		}
	}
	return nil
}

// fault answers status with f as the body and counts the outcome.
func (s *Server) fault(w http.ResponseWriter, status int, outcome string, f relayproto.Fault) {
	s.metrics.requests.WithLabelValues(outcome).Inc()
	if f.BackOffTimeInMilliseconds > 0 && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", strconv.FormatInt((f.BackOffTimeInMilliseconds+999)/1000, 10))
	}
	httpjson.Write(w, status, f)
}

// backOffMillis is d in whole milliseconds, rounded up, capped at
// relayproto.MaxBackOff.
func backOffMillis(d time.Duration) int64 {
	d = min(d, relayproto.MaxBackOff)
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
