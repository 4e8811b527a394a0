package graph

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/sources/manage"
)

// ManagerSettings are the operator's settings of the Graph subscription
// manager, as flags. The manager subscribes for the users of the
// source's directory (--graph-users) with the source's clientState
// (--graph-client-state, --graph-client-state-file) and key (--graph-key,
// also required by the lifecycle endpoint), as the counter's app
// (--graph-app-tenant-id, --graph-client-id, its certificate or secret,
// --graph-api-url, --graph-authority-url).
type ManagerSettings struct {
	source  *Settings
	counter *CounterSettings
	// NotificationURL is ManagerConfig.NotificationURL; without it the
	// manager is disabled.
	NotificationURL string
	// LifecycleURL is ManagerConfig.LifecycleURL.
	LifecycleURL string
	// Lifetime is ManagerConfig.Lifetime.
	Lifetime time.Duration
	// Rate is ManagerConfig.Rate.
	Rate float64
	// DeleteOnStop is ManagerConfig.DeleteOnStop.
	DeleteOnStop bool
}

// ManagerFlags registers the Graph subscription manager's flags on fs
// and returns the settings they fill; source and counter are the Graph
// source's and counter's settings, whose directory, secrets and app the
// manager uses.
func ManagerFlags(fs *flag.FlagSet, source *Settings, counter *CounterSettings) *ManagerSettings {
	s := &ManagerSettings{source: source, counter: counter}
	fs.StringVar(&s.NotificationURL, "graph-notification-url", "", "public URL of ingest's Graph endpoint that Graph posts change notifications to, e.g. https://push.example.com/v1/graph?key=...; setting it makes pushproxy keep a Graph subscription on the inbox of every user of --graph-users (created, renewed and deleted with the app of --graph-client-id; clientState: the last --graph-client-state)")
	fs.StringVar(&s.LifecycleURL, "graph-lifecycle-url", "", "public URL of the Graph lifecycle endpoint, e.g. https://push.example.com/v1/graph/lifecycle?key=... (default: --graph-notification-url)")
	fs.DurationVar(&s.Lifetime, "graph-subscription-lifetime", MaxMailSubscriptionLifetime, "lifetime asked for each Graph subscription, at most 10070m (Graph's maximum for mail); a subscription is renewed when less than a third of it is left")
	fs.Float64Var(&s.Rate, "graph-manage-rate", DefaultManageRate, "most Graph subscription requests (create, renew, delete) a second; 10 sets up 10,000 users in about 17 minutes")
	fs.BoolVar(&s.DeleteOnStop, "graph-delete-on-stop", false, "delete the Graph subscriptions when stopping (default: keep them, so that notifications keep flowing across a restart)")
	return s
}

// ManagerEnabled reports whether --graph-notification-url is set: then the
// manager is configured, and a missing setting is an error.
func (s *ManagerSettings) ManagerEnabled() bool { return s.NotificationURL != "" }

// ManagerConfig loads the directory, the secrets and the app's
// credential into a ManagerConfig; the caller adds the store, Missed,
// the log and the metrics registry (Manager does).
func (s *ManagerSettings) ManagerConfig() (ManagerConfig, error) {
	if s.source == nil || !s.source.Enabled() {
		return ManagerConfig{}, errors.New("configuring the Graph subscription manager: --graph-users is required")
	}
	if s.counter == nil || !s.counter.CounterEnabled() {
		return ManagerConfig{}, errors.New("configuring the Graph subscription manager: the app's --graph-app-tenant-id and --graph-client-id are required")
	}
	src, err := s.source.Config()
	if err != nil {
		return ManagerConfig{}, fmt.Errorf("configuring the Graph subscription manager: %w", err)
	}
	users, ok := src.Users.(UserLister)
	if !ok {
		return ManagerConfig{}, errors.New("configuring the Graph subscription manager: the directory cannot list its users")
	}
	if len(src.ClientStates) == 0 {
		return ManagerConfig{}, errors.New("configuring the Graph subscription manager: a --graph-client-state is required to give the subscriptions")
	}
	tokens, err := s.counter.appTokens()
	if err != nil {
		return ManagerConfig{}, fmt.Errorf("configuring the Graph subscription manager: %w", err)
	}
	return ManagerConfig{
		Users:           users,
		TenantID:        s.counter.AppTenantID,
		Tokens:          tokens,
		APIURL:          s.counter.APIURL,
		NotificationURL: s.NotificationURL,
		LifecycleURL:    s.LifecycleURL,
		ClientStates:    src.ClientStates,
		Key:             src.Key,
		Lifetime:        s.Lifetime,
		DeleteOnStop:    s.DeleteOnStop,
		Options:         manage.Options{Rate: s.Rate},
	}, nil
}

// Manager makes the manager of ManagerConfig with store, the Missed
// callback (nil: none), log and reg (nil: no metrics).
func (s *ManagerSettings) Manager(store SubscriptionStore, missed func(ctx context.Context, tenant, user string),
	log zerolog.Logger, reg prometheus.Registerer) (*Manager, error) {
	cfg, err := s.ManagerConfig()
	if err != nil {
		return nil, err
	}
	cfg.Store, cfg.Missed, cfg.Log, cfg.Metrics = store, missed, log, reg
	return NewManager(cfg)
}
