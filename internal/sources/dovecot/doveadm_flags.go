package dovecot

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/pushproxy/pushproxy/internal/flagenv"
)

// DoveadmSettings are the operator's settings of the doveadm counter, as
// flags.
type DoveadmSettings struct {
	// URL is DoveadmConfig.URL; without it the counter is disabled.
	URL string
	// APIKeyFile and PasswordFile hold DoveadmConfig.APIKey or
	// DoveadmConfig.Password (one of them).
	APIKeyFile   string
	PasswordFile string
	// Tenants is DoveadmConfig.Tenants.
	Tenants []string
}

// DoveadmFlags registers the doveadm counter's flags on fs and returns the
// settings they fill.
func DoveadmFlags(fs *flag.FlagSet) *DoveadmSettings {
	s := &DoveadmSettings{}
	fs.StringVar(&s.URL, "doveadm-url", "", "Dovecot's doveadm HTTP API (service doveadm { inet_listener http { port = 8080 } }), e.g. http://127.0.0.1:8080, to read true unseen counts from; without it the doveadm counter is disabled")
	fs.StringVar(&s.APIKeyFile, "doveadm-api-key-file", "", "file holding Dovecot's doveadm_api_key (sent as Authorization: X-Dovecot-API); set this or --doveadm-password-file")
	fs.StringVar(&s.PasswordFile, "doveadm-password-file", "", "file holding Dovecot's doveadm_password (sent as Basic authorization of the user doveadm); set this or --doveadm-api-key-file")
	fs.Var((*flagenv.StringList)(&s.Tenants), "doveadm-tenants", "tenants whose mailboxes this Dovecot holds, comma-separated; mailboxes of other tenants are left to other counters (default: every tenant)")
	return s
}

// Enabled reports whether the settings name a doveadm URL.
func (s *DoveadmSettings) Enabled() bool { return s.URL != "" }

// Counter reads the secret file and builds the counter.
func (s *DoveadmSettings) Counter() (*Doveadm, error) {
	if s.APIKeyFile != "" && s.PasswordFile != "" {
		return nil, errors.New("doveadm: set --doveadm-api-key-file or --doveadm-password-file, not both")
	}
	cfg := DoveadmConfig{URL: s.URL, Tenants: s.Tenants}
	var err error
	switch {
	case s.APIKeyFile != "":
		cfg.APIKey, err = readSecretFile(s.APIKeyFile, "doveadm API key")
	case s.PasswordFile != "":
		cfg.Password, err = readSecretFile(s.PasswordFile, "doveadm password")
	default:
		return nil, errors.New("doveadm: --doveadm-api-key-file or --doveadm-password-file is required with --doveadm-url")
	}
	if err != nil {
		return nil, err
	}
	return NewDoveadm(cfg)
}

// readSecretFile reads a one-line secret, without its line end.
func readSecretFile(path, what string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", what, err)
	}
	secret := strings.TrimRight(string(data), "\r\n")
	if secret == "" {
		return "", fmt.Errorf("reading %s: %s is empty", what, path)
	}
	return secret, nil
}
