package graph

import (
	"errors"
	"flag"
	"fmt"

	"github.com/pushproxy/pushproxy/internal/tokens"
)

// CounterSettings are the operator's settings of the Graph counter, as
// flags. The counter reads the users of the source's directory
// (--graph-users).
type CounterSettings struct {
	source *Settings
	// AppTenantID is the Entra tenant id of the app registration.
	AppTenantID string
	// ClientID is the app's client id.
	ClientID string
	// ClientCert and ClientKey are PEM files of the app's certificate and
	// its private key (the key may be in the certificate's file).
	ClientCert string
	ClientKey  string
	// ClientSecretFile holds a client secret, instead of a certificate.
	ClientSecretFile string
	// APIURL is CounterConfig.APIURL.
	APIURL string
	// AuthorityURL is tokens.AppTokenOptions.Authority.
	AuthorityURL string
}

// CounterFlags registers the Graph counter's flags on fs and returns the
// settings they fill; source are the Graph source's settings, whose
// directory the counter reads.
func CounterFlags(fs *flag.FlagSet, source *Settings) *CounterSettings {
	s := &CounterSettings{source: source}
	fs.StringVar(&s.AppTenantID, "graph-app-tenant-id", "", "Entra tenant id of the app that reads exact unread counts from Graph (app-only, Mail.ReadBasic.All); with --graph-client-id it enables the Graph counter for the users of --graph-users")
	fs.StringVar(&s.ClientID, "graph-client-id", "", "client (application) id of the app that reads unread counts from Graph")
	fs.StringVar(&s.ClientCert, "graph-client-cert", "", "PEM file of the certificate registered with the Graph app, signing its client assertions (or --graph-client-secret-file)")
	fs.StringVar(&s.ClientKey, "graph-client-key", "", "PEM file of the private key of --graph-client-cert (default: the certificate's file)")
	fs.StringVar(&s.ClientSecretFile, "graph-client-secret-file", "", "file holding a client secret of the Graph app, instead of a certificate")
	fs.StringVar(&s.APIURL, "graph-api-url", DefaultAPIURL, "base URL of the Graph API the counter reads")
	fs.StringVar(&s.AuthorityURL, "graph-authority-url", tokens.DefaultAuthority, "base URL of the Entra token endpoints (<url>/<tenant>/oauth2/v2.0/token)")
	return s
}

// CounterEnabled reports whether the settings name an app: then the
// counter is configured, and a missing setting is an error rather than a
// disabled counter.
func (s *CounterSettings) CounterEnabled() bool { return s.AppTenantID != "" || s.ClientID != "" }

// CounterConfig loads the directory, the certificate or secret and makes
// the token source into a CounterConfig; the caller adds the log and the
// metrics registry.
func (s *CounterSettings) CounterConfig() (CounterConfig, error) {
	if s.source == nil || s.source.UsersFile == "" {
		return CounterConfig{}, errors.New("configuring the Graph counter: --graph-users is required")
	}
	dir, err := LoadDirectoryFile(s.source.UsersFile)
	if err != nil {
		return CounterConfig{}, fmt.Errorf("configuring the Graph counter: %w", err)
	}
	src, err := s.appTokens()
	if err != nil {
		return CounterConfig{}, fmt.Errorf("configuring the Graph counter: %w", err)
	}
	return CounterConfig{Users: NewUserIndex(dir), TenantID: s.AppTenantID, Tokens: src, APIURL: s.APIURL}, nil
}

// appTokens loads the app's certificate or secret and makes its app-only
// token source for Graph.
func (s *CounterSettings) appTokens() (*tokens.AppTokenSource, error) {
	opts := tokens.AppTokenOptions{Authority: s.AuthorityURL, TenantID: s.AppTenantID, ClientID: s.ClientID, Scope: tokens.GraphScope}
	if err := opts.LoadCredential(s.ClientCert, s.ClientKey, s.ClientSecretFile); err != nil {
		return nil, err
	}
	return tokens.NewAppTokenSource(opts)
}

// Counter makes the counter of CounterConfig, without a log or metrics.
func (s *CounterSettings) Counter() (*Counter, error) {
	cfg, err := s.CounterConfig()
	if err != nil {
		return nil, err
	}
	return NewCounter(cfg)
}
