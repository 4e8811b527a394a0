package ews

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/pushproxy/pushproxy/internal/flagenv"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Authentication schemes of the EWS counter.
const (
	AuthBasic = "basic"
	AuthNTLM  = "ntlm"
	AuthOAuth = "oauth"
)

// CounterSettings are the operator's settings of the EWS counter, as
// flags.
type CounterSettings struct {
	// URL is CounterConfig.URL; without it the counter is disabled.
	URL string
	// Auth is AuthBasic, AuthNTLM or AuthOAuth.
	Auth string
	// Username and PasswordFile are the Basic or NTLM credentials.
	Username     string
	PasswordFile string
	// Impersonate is CounterConfig.Impersonate.
	Impersonate bool
	// AppTenantID, ClientID, ClientCert, ClientKey, ClientSecretFile and
	// AuthorityURL describe the app whose tokens OAuth uses.
	AppTenantID      string
	ClientID         string
	ClientCert       string
	ClientKey        string
	ClientSecretFile string
	AuthorityURL     string
	// CountTenants is CounterConfig.Tenants.
	CountTenants []string
}

// CounterFlags registers the EWS counter's flags on fs and returns the
// settings they fill.
func CounterFlags(fs *flag.FlagSet) *CounterSettings {
	s := &CounterSettings{}
	fs.StringVar(&s.URL, "ews-url", "", "EWS endpoint to read exact unread counts from with GetFolder, e.g. https://outlook.office365.com/EWS/Exchange.asmx or https://mail.fabrikam.com/EWS/Exchange.asmx; without it the EWS counter is disabled")
	fs.StringVar(&s.Auth, "ews-auth", AuthBasic, "how the EWS counter and subscription manager authenticate: basic (--ews-username, --ews-password-file), ntlm (the same account, answering the server's NTLMv2 challenges; the password never crosses the wire; for Exchange on premises that allows only Windows authentication) or oauth (an app-only token from Entra: --ews-app-tenant-id, --ews-client-id and a certificate or secret; always impersonates)")
	fs.StringVar(&s.Username, "ews-username", "", "account of the EWS counter with --ews-auth basic or ntlm, as user@domain or, for ntlm, DOMAIN\\user (a service account with delegate access or, with --ews-impersonate, the ApplicationImpersonation role)")
	fs.StringVar(&s.PasswordFile, "ews-password-file", "", "file holding the password of --ews-username")
	fs.BoolVar(&s.Impersonate, "ews-impersonate", false, "send ExchangeImpersonation with each mailbox's address (needs the ApplicationImpersonation role; always on with --ews-auth oauth)")
	fs.StringVar(&s.AppTenantID, "ews-app-tenant-id", "", "Entra tenant id of the app whose tokens the EWS counter uses with --ews-auth oauth (application permission full_access_as_app)")
	fs.StringVar(&s.ClientID, "ews-client-id", "", "client (application) id of that app")
	fs.StringVar(&s.ClientCert, "ews-client-cert", "", "PEM file of the certificate registered with that app, signing its client assertions (or --ews-client-secret-file)")
	fs.StringVar(&s.ClientKey, "ews-client-key", "", "PEM file of the private key of --ews-client-cert (default: the certificate's file)")
	fs.StringVar(&s.ClientSecretFile, "ews-client-secret-file", "", "file holding a client secret of that app, instead of a certificate")
	fs.StringVar(&s.AuthorityURL, "ews-authority-url", tokens.DefaultAuthority, "base URL of the Entra token endpoints (<url>/<tenant>/oauth2/v2.0/token)")
	fs.Var((*flagenv.StringList)(&s.CountTenants), "ews-count-tenants", "tenants whose mailboxes this Exchange holds, comma-separated; mailboxes of other tenants are left to other counters (default: every tenant)")
	return s
}

// CounterEnabled reports whether the settings name an EWS endpoint.
func (s *CounterSettings) CounterEnabled() bool { return s.URL != "" }

// CounterConfig reads the password or makes the token source into a
// CounterConfig; the caller adds the log and the metrics registry.
func (s *CounterSettings) CounterConfig() (CounterConfig, error) {
	cfg := CounterConfig{Access: Access{URL: s.URL, Tenants: s.CountTenants, Impersonate: s.Impersonate}}
	switch auth := strings.ToLower(s.Auth); auth {
	case AuthBasic, AuthNTLM:
		if s.Username == "" || s.PasswordFile == "" {
			return CounterConfig{}, fmt.Errorf("configuring the EWS counter: --ews-username and --ews-password-file are required with --ews-auth %s", auth)
		}
		cfg.NTLM = auth == AuthNTLM
		data, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return CounterConfig{}, fmt.Errorf("configuring the EWS counter: reading the password: %w", err)
		}
		cfg.Username, cfg.Password = s.Username, strings.TrimRight(string(data), "\r\n")
		if cfg.Password == "" {
			return CounterConfig{}, fmt.Errorf("configuring the EWS counter: the password file %s is empty", s.PasswordFile)
		}
	case AuthOAuth:
		opts := tokens.AppTokenOptions{Authority: s.AuthorityURL, TenantID: s.AppTenantID, ClientID: s.ClientID, Scope: tokens.EWSScope}
		if err := opts.LoadCredential(s.ClientCert, s.ClientKey, s.ClientSecretFile); err != nil {
			return CounterConfig{}, fmt.Errorf("configuring the EWS counter: %w", err)
		}
		src, err := tokens.NewAppTokenSource(opts)
		if err != nil {
			return CounterConfig{}, fmt.Errorf("configuring the EWS counter: %w", err)
		}
		cfg.Tokens = src
	default:
		return CounterConfig{}, fmt.Errorf("configuring the EWS counter: --ews-auth %q is none of %s, %s and %s", s.Auth, AuthBasic, AuthNTLM, AuthOAuth)
	}
	return cfg, nil
}

// Counter makes the counter of CounterConfig, without a log or metrics.
func (s *CounterSettings) Counter() (*Counter, error) {
	cfg, err := s.CounterConfig()
	if err != nil {
		return nil, err
	}
	return NewCounter(cfg)
}
