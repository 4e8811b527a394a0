package ews

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

// ManagerSettings are the operator's settings of the EWS subscription
// manager, as flags. The manager reaches EWS as the counter does
// (--ews-url, --ews-auth and its credentials, --ews-impersonate,
// --ews-count-tenants).
type ManagerSettings struct {
	counter *CounterSettings
	// NotificationURL is ManagerConfig.NotificationURL; without it the
	// manager is disabled.
	NotificationURL string
	// MailboxesFile is the MailboxFile of ManagerConfig.Mailboxes.
	MailboxesFile string
	// StatusFrequency is ManagerConfig.StatusFrequency.
	StatusFrequency time.Duration
	// Rate is ManagerConfig.Rate.
	Rate float64
}

// ManagerFlags registers the EWS subscription manager's flags on fs and
// returns the settings they fill; counter are the EWS counter's
// settings, whose server and credentials the manager uses.
func ManagerFlags(fs *flag.FlagSet, counter *CounterSettings) *ManagerSettings {
	s := &ManagerSettings{counter: counter}
	fs.StringVar(&s.NotificationURL, "ews-notification-url", "", "public URL of ingest's EWS endpoint that Exchange posts push notifications to, e.g. https://push.example.com/v1/ews?key=...; setting it makes pushproxy keep an EWS push subscription on the Inbox of every mailbox of --ews-mailboxes-file (made with the server and credentials of --ews-url and --ews-auth), and makes the EWS endpoint know those subscriptions")
	fs.StringVar(&s.MailboxesFile, "ews-mailboxes-file", "", `JSON file listing the mailboxes to keep EWS push subscriptions on: {"mailboxes":[{"tenant":"fabrikam.com","user":"alice@fabrikam.com"}]}; read again every 10 minutes, a mailbox removed from it is unsubscribed`)
	fs.DurationVar(&s.StatusFrequency, "ews-status-frequency", DefaultStatusFrequency, "how often Exchange sends a status notification on an idle EWS push subscription, whole minutes from 1m to 24h; a subscription silent for twice as long (and 2m more) is made again from its last watermark, and Exchange gives one up after failing to deliver for this long")
	fs.Float64Var(&s.Rate, "ews-manage-rate", DefaultManageRate, "most EWS subscription requests (Subscribe, and GetFolder once per mailbox) a second; at 10, 10,000 mailboxes are subscribed again in about 17 minutes after a restart")
	return s
}

// ManagerEnabled reports whether --ews-notification-url is set: then the
// manager is configured, and a missing setting is an error.
func (s *ManagerSettings) ManagerEnabled() bool { return s.NotificationURL != "" }

// ManagerConfig checks the mailbox list and reads the counter's
// credentials into a ManagerConfig; the caller adds the store, Resync,
// the log and the metrics registry (Manager does).
func (s *ManagerSettings) ManagerConfig() (ManagerConfig, error) {
	if s.counter == nil || !s.counter.CounterEnabled() {
		return ManagerConfig{}, errors.New("configuring the EWS subscription manager: --ews-url and the EWS credentials (--ews-auth) are required")
	}
	if s.MailboxesFile == "" {
		return ManagerConfig{}, errors.New("configuring the EWS subscription manager: --ews-mailboxes-file is required")
	}
	list := NewMailboxListFile(s.MailboxesFile)
	if _, err := list.ListMailboxes(context.Background()); err != nil {
		return ManagerConfig{}, fmt.Errorf("configuring the EWS subscription manager: %w", err)
	}
	access, err := s.counter.CounterConfig()
	if err != nil {
		return ManagerConfig{}, fmt.Errorf("configuring the EWS subscription manager: %w", err)
	}
	return ManagerConfig{
		Mailboxes:       list,
		Access:          access.Access,
		NotificationURL: s.NotificationURL,
		StatusFrequency: s.StatusFrequency,
		Options:         manage.Options{Rate: s.Rate},
	}, nil
}

// Manager makes the manager of ManagerConfig with store, the Resync
// callback (nil: none), log and reg (nil: no metrics).
func (s *ManagerSettings) Manager(store SubscriptionStore, resync func(ctx context.Context, tenant, user string),
	log zerolog.Logger, reg prometheus.Registerer) (*Manager, error) {
	cfg, err := s.ManagerConfig()
	if err != nil {
		return nil, err
	}
	cfg.Store, cfg.Resync, cfg.Log, cfg.Metrics = store, resync, log, reg
	return NewManager(cfg)
}
