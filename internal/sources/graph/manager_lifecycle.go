package graph

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Lifecycle handles a lifecycle notification delivery (the body Graph
// posts to the lifecycleNotificationUrl): reauthorizationRequired renews
// the subscription at once, subscriptionRemoved creates it anew at once
// (both by Run, ahead of other work), missed calls ManagerConfig.Missed
// with the subscription's user. A notification whose clientState is none
// of the configured ones is dropped, as is one about a subscription the
// Manager does not know (logged). The error is a *httpjson.Error: 400 or
// 413 for a body that is not a collection, 401 when no notification
// carries a known clientState, 503 until Run has loaded the store.
func (m *Manager) Lifecycle(ctx context.Context, body []byte) error {
	m.core.Lock()
	loaded := m.core.Loaded()
	m.core.Unlock()
	if !loaded {
		return &httpjson.Error{Status: http.StatusServiceUnavailable, Code: "unavailable",
			Message: "the Graph subscriptions are not loaded yet; retry later"}
	}
	notes, err := ParseLifecycle(body)
	if err != nil {
		return err
	}
	matched := 0
	for _, n := range notes {
		tenants, ok := m.states.check(n.ClientState)
		if !ok {
			m.cfg.Log.Warn().Str("event", sources.Clip(n.Event)).Str("subscription", n.SubscriptionID).
				Msg("dropped a Graph lifecycle notification with a wrong clientState")
			continue
		}
		matched++
		m.metrics.lifecycle.WithLabelValues(lifecycleLabel(n.Event)).Inc()
		m.handle(ctx, n.Lifecycle, tenants)
	}
	if matched == 0 && len(notes) > 0 {
		return &httpjson.Error{Status: http.StatusUnauthorized, Code: "unauthorized", Field: "clientState",
			Message: "no lifecycle notification carries a known clientState"}
	}
	return nil
}

// OnLifecycle handles a lifecycle notification the source received (its
// clientState checked), when the lifecycle URL is the notification URL:
// set it as Config.OnLifecycle. It does as Lifecycle does.
func (m *Manager) OnLifecycle(ctx context.Context, l Lifecycle) {
	m.core.Lock()
	loaded := m.core.Loaded()
	m.core.Unlock()
	if !loaded {
		m.cfg.Log.Warn().Str("event", sources.Clip(l.Event)).Str("subscription", sources.Clip(l.SubscriptionID)).
			Msg("dropped a Graph lifecycle notification that came before the subscriptions were loaded")
		return
	}
	m.handle(ctx, l, nil)
}

// handle acts on one lifecycle notification whose clientState may report
// for tenants (nil: any).
func (m *Manager) handle(ctx context.Context, l Lifecycle, tenants []string) {
	log := m.cfg.Log.With().Str("event", sources.Clip(l.Event)).Str("subscription", sources.Clip(l.SubscriptionID)).Logger()
	m.core.Lock()
	e := m.core.Find(l.SubscriptionID)
	if e == nil {
		m.core.Unlock()
		log.Warn().Msg("ignored a Graph lifecycle notification about a subscription the manager does not know")
		return
	}
	tenant, user, managed := e.User.Tenant, e.User.Address, e.Managed
	if tenants != nil && !slices.Contains(tenants, tenant) {
		m.core.Unlock()
		log.Warn().Str("tenant", tenant).Msg("ignored a Graph lifecycle notification whose clientState may not report for the subscription's tenant")
		return
	}
	if !managed {
		m.core.Unlock()
		log.Info().Str("user", user).Msg("ignored a Graph lifecycle notification about a subscription being deleted")
		return
	}
	switch l.Event {
	case LifecycleReauthorizationRequired:
		if e.Extra.act != actRecreate {
			e.Extra = urgency{act: actRenew, sub: l.SubscriptionID}
		}
	case LifecycleSubscriptionRemoved:
		e.Extra = urgency{act: actRecreate, sub: l.SubscriptionID}
	}
	m.core.Unlock()
	level, msg := zerolog.InfoLevel, "Graph asks to reauthorize a subscription: renewing it"
	switch l.Event {
	case LifecycleReauthorizationRequired:
	case LifecycleSubscriptionRemoved:
		level, msg = zerolog.WarnLevel, "Graph removed a subscription: creating it anew"
	case LifecycleMissed:
		level, msg = zerolog.WarnLevel, "Graph missed change notifications: asking for the user's count to be read again"
	default:
		level, msg = zerolog.WarnLevel, "ignored a Graph lifecycle notification of an unknown event"
	}
	log.WithLevel(level).Str("user", user).Msg(msg)
	switch l.Event {
	case LifecycleReauthorizationRequired, LifecycleSubscriptionRemoved:
		m.core.Signal()
	case LifecycleMissed:
		if m.cfg.Missed != nil {
			m.cfg.Missed(ctx, tenant, user)
		}
	}
}

// LifecycleHandler answers at the lifecycleNotificationUrl: Graph's
// validation request (a POST with validationToken, answered 200
// text/plain with the token, as Source.Handshake does), and lifecycle
// notification deliveries, handled by Lifecycle and answered 202. A wrong
// key (ManagerConfig.Key) is answered 401, another method than POST 405.
func (m *Manager) LifecycleHandler() http.Handler { return m.LifecycleHandlerFor(m.Lifecycle) }

// LifecycleHandlerFor is LifecycleHandler handing each body to handle
// instead of Lifecycle: an ingest that does not run the manager hands it
// to the one that does. handle's *httpjson.Error is the answer.
func (m *Manager) LifecycleHandlerFor(handle func(ctx context.Context, body []byte) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "only POST is allowed"})
			return
		}
		if !keyMatches(r, m.key) {
			w.Header().Set("WWW-Authenticate", `Key realm="pushproxy", param="`+KeyParam+`"`)
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing or wrong credentials"})
			return
		}
		if q := r.URL.Query(); q.Has(ValidationParam) {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
			token := q.Get(ValidationParam)
			if reason := checkValidationToken(token); reason != "" {
				httpjson.WriteError(w, &httpjson.Error{Status: http.StatusBadRequest, Code: sources.CodeMalformed, Field: ValidationParam, Message: reason})
				return
			}
			m.cfg.Log.Info().Msg("answered a Graph lifecycle endpoint validation")
			writeValidationToken(w, token)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxLifecycleBody+1))
		if err != nil {
			httpjson.WriteError(w, sources.Malformed("reading the body: %v", err))
			return
		}
		if len(body) > MaxLifecycleBody {
			httpjson.WriteError(w, sources.TooLarge("the body is longer than %d bytes", MaxLifecycleBody))
			return
		}
		if err := handle(r.Context(), body); err != nil {
			var se *httpjson.Error
			if !errors.As(err, &se) {
				se = &httpjson.Error{Status: http.StatusInternalServerError, Code: "internal", Message: "handling the lifecycle notifications failed"}
			}
			httpjson.WriteError(w, se)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}
