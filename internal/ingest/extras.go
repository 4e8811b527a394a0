package ingest

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// Extras are the routes ingest serves beside the native and Dovecot
// sources: the device subscriptions API, Exchange EWS push notifications
// and Microsoft Graph change notifications.
type Extras struct {
	EWS   *ews.Settings
	Graph *graph.Settings
}

// ExtraFlags registers the flags of the extras on fs.
func ExtraFlags(fs *flag.FlagSet) *Extras {
	return &Extras{EWS: ews.Flags(fs), Graph: graph.Flags(fs)}
}

// Extensions returns the Extensions that mount the extras on a server:
// always the subscriptions API (behind the native API's Bearer tokens), and
// EWS and Graph when their settings name their registry files.
func (x *Extras) Extensions(ctx context.Context, conn *broker.Conn, reg prometheus.Registerer) ([]Extension, error) {
	keyer, err := broker.Keyer(ctx, conn.JS)
	if err != nil {
		return nil, fmt.Errorf("reading the subject key: %w", err)
	}
	store, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		return nil, err
	}
	exts := []Extension{SubscriptionsAPI(store)}
	if x.EWS != nil && x.EWS.Enabled() {
		cfg, err := x.EWS.Config()
		if err != nil {
			return nil, fmt.Errorf("configuring the EWS source: %w", err)
		}
		exts = append(exts, func(s *Server) error {
			cfg.Log, cfg.Metrics = s.Log(), reg
			if s.creds != nil {
				cfg.VerifyKey = eventSecrets(s.creds, credentials.KindEWS)
			}
			src, err := ews.NewSource(cfg)
			if err != nil {
				return err
			}
			h := s.SourceHandler(Source{Name: events.SourceEWS, Auth: src, MediaTypes: ews.MediaTypes, Parse: src.Parse,
				Respond: func(w http.ResponseWriter, r *http.Request, _ *Result) { src.Respond(w, r) }})
			s.Handle("POST /v1/ews", src.Wrap(h))
			return nil
		})
	}
	if x.Graph != nil && x.Graph.Enabled() {
		cfg, err := x.Graph.Config()
		if err != nil {
			return nil, fmt.Errorf("configuring the Graph source: %w", err)
		}
		exts = append(exts, func(s *Server) error {
			cfg.Log, cfg.Metrics = s.Log(), reg
			if s.creds != nil {
				cfg.Verify = eventSecrets(s.creds, credentials.KindGraph)
			}
			src, err := graph.NewSource(cfg)
			if err != nil {
				return err
			}
			h := s.SourceHandler(Source{Name: events.SourceGraph, Auth: src, MediaTypes: graph.MediaTypes, Timeout: graph.PublishTimeout, Parse: src.Parse,
				Respond: func(w http.ResponseWriter, r *http.Request, _ *Result) { src.Respond(w, r) }})
			s.Handle("POST /v1/graph", src.Handshake(h))
			return nil
		})
	}
	return exts, nil
}

// eventSecrets checks the secrets of a source that authenticates with one
// (Graph clientStates, EWS URL keys) against the credentials of kind in
// ix: a known one reports for the tenants of its credential (any, for
// "*").
func eventSecrets(ix *credentials.Index, kind credentials.Kind) func(string) ([]string, bool) {
	return func(secret string) ([]string, bool) {
		scope, ok := ix.Secret(kind, secret)
		if !ok || !slices.Contains(scope.Roles, credentials.RoleEvents) {
			return nil, false
		}
		if slices.Contains(scope.Tenants, credentials.AllTenants) {
			return nil, true
		}
		return scope.Tenants, true
	}
}

// SubscriptionsAPI mounts the device subscriptions API (see
// subscriptions.Routes) behind the native API's Bearer credentials: a
// credential needs the subscriptions role to subscribe and unsubscribe and
// the read role to list, for the tenants it names; only admin may see
// device tokens.
func SubscriptionsAPI(store *subscriptions.Store) Extension {
	return func(s *Server) error {
		auth := s.NativeAuth()
		if auth == nil {
			return nil
		}
		opts := subscriptions.APIOptions{Access: scopeAccess{}, Check: checkWebPush(s.cfg.AllowPrivateEndpoints)}
		for pattern, h := range subscriptions.Routes(store.WithLimits(s.cfg.DeviceLimits), s.Log(), opts) {
			s.Handle(pattern, Chain(h, RequireAuth(auth), s.limits.Middleware()))
		}
		return nil
	}
}

// scopeAccess lets a request reach the subscriptions its credential's
// scope allows.
type scopeAccess struct{}

// Allow checks the subscriptions role (write) or the read role (read) on
// tenant.
func (scopeAccess) Allow(r *http.Request, write bool, tenant string) bool {
	scope, ok := credentials.FromContext(r.Context())
	if !ok {
		return false
	}
	if write {
		return scope.Allows(credentials.RoleSubscriptions, tenant)
	}
	return scope.Allows(credentials.RoleRead, tenant) || scope.Allows(credentials.RoleSubscriptions, tenant)
}

// Reveal lets admin credentials see device tokens.
func (scopeAccess) Reveal(r *http.Request) bool {
	scope, ok := credentials.FromContext(r.Context())
	return ok && scope.IsAdmin()
}
