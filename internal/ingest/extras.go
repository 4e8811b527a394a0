package ingest

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/sources/imap"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// Extras are what ingest runs beside the native and Dovecot sources: the
// device subscriptions API, Exchange EWS push notifications, Microsoft
// Graph change notifications with the subscriptions it keeps, and the
// IMAP watcher.
type Extras struct {
	EWS   *ews.Settings
	Graph *graph.Settings
	// GraphApp is the Graph app (app-only tokens) that the subscription
	// manager and the reconciler's Graph counter share.
	GraphApp     *graph.CounterSettings
	GraphManager *graph.ManagerSettings
	// EWSApp is how ingest and the reconciler's EWS counter reach Exchange
	// (URL, credentials); EWSManager keeps the push subscriptions.
	EWSApp     *ews.CounterSettings
	EWSManager *ews.ManagerSettings
	// IMAP is the IMAP server (shared with the reconciler's IMAP counter)
	// and the watcher's users.
	IMAP *imap.Settings
}

// ExtraFlags registers the flags of the extras on fs.
func ExtraFlags(fs *flag.FlagSet) *Extras {
	x := &Extras{EWS: ews.Flags(fs), Graph: graph.Flags(fs)}
	x.GraphApp = graph.CounterFlags(fs, x.Graph)
	x.GraphManager = graph.ManagerFlags(fs, x.Graph, x.GraphApp)
	x.EWSApp = ews.CounterFlags(fs)
	x.EWSManager = ews.ManagerFlags(fs, x.EWSApp)
	x.IMAP = imap.Flags(fs)
	return x
}

// Extensions returns the Extensions that mount the extras on a server:
// always the subscriptions API (behind the native API's Bearer tokens);
// EWS and Graph when their settings name their registry files; the Graph
// subscription manager (and its lifecycle endpoint) with
// --graph-notification-url; the IMAP watcher with --imap-watch-users-file.
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
	if ext, err := x.ewsExtension(ctx, conn, reg); err != nil {
		return nil, err
	} else if ext != nil {
		exts = append(exts, ext)
	}
	// The manager goes first: lifecycle notifications sent to the
	// notification URL reach it through the Graph source.
	var manager *graphManaged
	if x.GraphManager != nil && x.GraphManager.ManagerEnabled() {
		kv, err := conn.JS.KeyValue(ctx, broker.BucketGraphSubscriptions)
		if err != nil {
			return nil, fmt.Errorf("opening bucket %s (provision the layout again): %w", broker.BucketGraphSubscriptions, err)
		}
		graphLease, err := broker.OpenLease(ctx, conn.JS, LeaseGraphSubscriptions)
		if err != nil {
			return nil, err
		}
		exts = append(exts, func(s *Server) error {
			log := s.Log().With().Str("component", "graph-subscriptions").Logger()
			m, err := x.GraphManager.Manager(graph.NewKVSubscriptionStore(kv), askReconcile(conn.NC, log), log, reg)
			if err != nil {
				return fmt.Errorf("configuring the Graph subscription manager: %w", err)
			}
			manager = &graphManaged{managed: managed{nc: conn.NC, log: log}, m: m}
			s.Handle("POST /v1/graph/lifecycle", m.LifecycleHandlerFor(manager.Lifecycle))
			run, err := leased(reg, graphLease.WithLog(log), LeaseGraphSubscriptions, manager.run())
			if err != nil {
				return err
			}
			s.Go(run)
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
			if manager != nil {
				cfg.OnLifecycle = manager.OnLifecycle
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
	if x.IMAP != nil && x.IMAP.WatchEnabled() {
		exts = append(exts, func(s *Server) error {
			log := s.Log().With().Str("component", "imap-watcher").Logger()
			publish := func(ctx context.Context, evs []events.Event) error { return s.Publish(ctx, events.SourceIMAP, evs) }
			w, err := x.IMAP.Watcher(publish, reg, log)
			if err != nil {
				return fmt.Errorf("configuring the IMAP watcher: %w", err)
			}
			s.enabled = append(s.enabled, events.SourceIMAP)
			s.AddStatus(func(st *Status) { st.IMAP = w.Status() })
			s.Go(w.Run)
			return nil
		})
	}
	return exts, nil
}

// ewsExtension mounts the EWS source: with the subscriptions of a registry
// file (--ews-subscriptions), those the manager keeps
// (--ews-notification-url), or both (the file is asked first). It returns
// nil when neither is configured.
func (x *Extras) ewsExtension(ctx context.Context, conn *broker.Conn, reg prometheus.Registerer) (Extension, error) {
	keep := x.EWSManager != nil && x.EWSManager.ManagerEnabled()
	if x.EWS == nil || (!x.EWS.Enabled() && !keep) {
		return nil, nil
	}
	var kv jetstream.KeyValue
	var lease *broker.Lease
	if keep {
		var err error
		if kv, err = conn.JS.KeyValue(ctx, broker.BucketEWSSubscriptions); err != nil {
			return nil, fmt.Errorf("opening bucket %s (provision the layout again): %w", broker.BucketEWSSubscriptions, err)
		}
		if lease, err = broker.OpenLease(ctx, conn.JS, LeaseEWSSubscriptions); err != nil {
			return nil, err
		}
	}
	return func(s *Server) error {
		var cfg ews.Config
		var err error
		if keep {
			log := s.Log().With().Str("component", "ews-subscriptions").Logger()
			m, err := x.EWSManager.Manager(ews.NewKVSubscriptionStore(kv), askReconcile(conn.NC, log), log, reg)
			if err != nil {
				return fmt.Errorf("configuring the EWS subscription manager: %w", err)
			}
			em := &ewsManaged{managed: managed{nc: conn.NC, log: log}, m: m}
			if cfg, err = x.EWS.ConfigWith(em); err != nil {
				return fmt.Errorf("configuring the EWS source: %w", err)
			}
			cfg.Observe, cfg.OnSubscriptionError = em.Observe, em.OnSubscriptionError
			run, err := leased(reg, lease.WithLog(log), LeaseEWSSubscriptions, em.run())
			if err != nil {
				return err
			}
			s.Go(run)
		} else if cfg, err = x.EWS.Config(); err != nil {
			return fmt.Errorf("configuring the EWS source: %w", err)
		}
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
	}, nil
}

// askReconcile returns the subscription managers' callback for a user
// whose changes may have been missed (Graph's "missed" lifecycle event, an
// EWS watermark Exchange refused): it asks the reconciler to read the
// user's count again, in the background, and logs when no reconciler
// answers.
func askReconcile(nc *nats.Conn, log zerolog.Logger) func(ctx context.Context, tenant, user string) {
	return func(_ context.Context, tenant, user string) {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if _, err := reconcile.Ask(ctx, nc, []reconcile.User{{Tenant: tenant, User: user}}); err != nil {
				log.Warn().Err(err).Str("tenant", tenant).Str("user", user).Msg("changes of a user may have been missed; asking the reconciler to read the count failed")
			}
		}()
	}
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
