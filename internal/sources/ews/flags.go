package ews

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Settings are the operator's settings of the EWS source, as flags.
type Settings struct {
	// SubscriptionsFile is the registry file (see RegistryFile); without
	// it the source is disabled.
	SubscriptionsFile string
	// Key is Config.Key; KeyFile holds it instead.
	Key     string
	KeyFile string
	// RequireKey is Config.RequireKey.
	RequireKey bool
}

// Flags registers the EWS source's flags on fs and returns the settings
// they fill.
func Flags(fs *flag.FlagSet) *Settings {
	s := &Settings{}
	fs.StringVar(&s.SubscriptionsFile, "ews-subscriptions", "", `JSON file mapping EWS push subscription ids to users: {"subscriptions":[{"subscription_id","tenant","user","inbox_folder_id"}]}; without it (and without --ews-notification-url, the subscriptions ingest keeps itself) the EWS endpoint is disabled; with both, a subscription is looked up in this file first`)
	fs.StringVar(&s.Key, "ews-key", "", "secret that EWS push subscription URLs carry as ?key=...; empty accepts any caller (unless --ews-require-key), and only notifications for subscriptions in --ews-subscriptions are used; prefer pushctl credentials create --kind ews")
	fs.StringVar(&s.KeyFile, "ews-key-file", "", "file holding the EWS URL key (instead of --ews-key)")
	fs.BoolVar(&s.RequireKey, "ews-require-key", false, "refuse EWS requests without a known key even when --ews-key is empty: only keys from pushctl credentials create --kind ews (scoped to tenants, rotated and revoked without a restart) are accepted")
	return s
}

// Enabled reports whether the settings name a registry file.
func (s *Settings) Enabled() bool { return s.SubscriptionsFile != "" }

// Config loads the registry and the key into a Config; the caller adds
// the log, the metrics registry and callbacks.
func (s *Settings) Config() (Config, error) {
	reg, err := LoadRegistryFile(s.SubscriptionsFile)
	if err != nil {
		return Config{}, err
	}
	return s.withKey(reg)
}

// ConfigWith loads the key into a Config whose registry is reg: the
// Manager, when it keeps the subscriptions (--ews-notification-url),
// after the registry file's subscriptions when one is given too. The caller adds the log, the metrics
// registry and callbacks (with the Manager: Observe and
// OnSubscriptionError).
func (s *Settings) ConfigWith(reg SubscriptionRegistry) (Config, error) {
	if s.SubscriptionsFile != "" {
		file, err := LoadRegistryFile(s.SubscriptionsFile)
		if err != nil {
			return Config{}, err
		}
		reg = Registries{file, reg}
	}
	return s.withKey(reg)
}

// withKey loads the key into a Config whose registry is reg.
func (s *Settings) withKey(reg SubscriptionRegistry) (Config, error) {
	key := s.Key
	if s.KeyFile != "" {
		data, err := os.ReadFile(s.KeyFile)
		if err != nil {
			return Config{}, fmt.Errorf("reading the EWS key: %w", err)
		}
		key = strings.TrimRight(string(data), "\r\n")
	}
	return Config{Subscriptions: reg, Key: key, RequireKey: s.RequireKey}, nil
}
