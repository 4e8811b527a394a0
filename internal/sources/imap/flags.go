package imap

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/flagenv"
)

// Settings are the operator's settings of the IMAP counter and watcher,
// as flags.
type Settings struct {
	// Addr is Config.Addr; without it the counter is disabled.
	Addr string
	// TLS is Config.TLS by name; "none" also sets Config.InsecurePlain.
	TLS string
	// Login is Config.Login by name (separator or plain) for a master
	// user; a users file makes it LoginUserPasswords.
	Login string
	// MasterUser and MasterPasswordFile give Config.MasterUser and
	// Config.MasterPassword.
	MasterUser         string
	MasterPasswordFile string
	// MasterSeparator is Config.MasterSeparator.
	MasterSeparator string
	// UsersFile is a users file (see UsersFile) for Config.Users.
	UsersFile string
	// Tenants is Config.Tenants.
	Tenants []string
	// MaxConns is Config.MaxConns.
	MaxConns int

	// WatchUsersFile is the watcher's watch list (see WatchList); without
	// it the watcher is disabled.
	WatchUsersFile string
	// WatchMaxConns is WatchConfig.MaxConns.
	WatchMaxConns int
	// WatchSettle is WatchConfig.Settle.
	WatchSettle time.Duration
	// WatchLoginsPerSecond is WatchConfig.LoginsPerSecond.
	WatchLoginsPerSecond float64
	// WatchLoginsInFlight is WatchConfig.LoginsInFlight.
	WatchLoginsInFlight int
}

// Flags registers the IMAP counter's and watcher's flags on fs and
// returns the settings they fill.
func Flags(fs *flag.FlagSet) *Settings {
	s := &Settings{}
	fs.StringVar(&s.Addr, "imap-addr", "", "IMAP server to read true unseen counts from with STATUS <mailbox> (UNSEEN), as host:port (e.g. mail.example.com:993); without it the IMAP counter is disabled")
	fs.StringVar(&s.TLS, "imap-tls", string(TLSImplicit), "how the IMAP connection is secured: implicit (TLS from the start, imaps, usually port 993), starttls (STARTTLS before logging in, usually port 143; refused if the server does not offer it) or none (plain text, passwords included: only to a loopback address such as 127.0.0.1:143)")
	fs.StringVar(&s.MasterUser, "imap-master-user", "", "master user that logs in as each user (Dovecot: a passdb with master = yes, best with pass = yes so that an unknown user is told apart and left to other counters); or use --imap-users-file")
	fs.StringVar(&s.MasterPasswordFile, "imap-master-password-file", "", "file holding the master user's password")
	fs.StringVar(&s.Login, "imap-login", string(LoginSeparator), "how the master user logs in as a user: separator (LOGIN user*master with the master password, Dovecot's auth_master_user_separator) or plain (AUTHENTICATE PLAIN with the user as authorization identity and the master as authentication identity)")
	fs.StringVar(&s.MasterSeparator, "imap-master-separator", DefaultMasterSeparator, "separator between user and master user in --imap-login separator's login name (Dovecot's auth_master_user_separator)")
	fs.StringVar(&s.UsersFile, "imap-users-file", "", `JSON file of per-user passwords, used instead of a master user: {"users":[{"tenant":"example.com","user":"alice@example.com","password":"..."}]} (an entry without tenant matches any tenant; users not listed are left to other counters)`)
	fs.Var((*flagenv.StringList)(&s.Tenants), "imap-tenants", "tenants whose mailboxes this IMAP server holds, comma-separated; mailboxes of other tenants are left to other counters (default: every tenant)")
	fs.IntVar(&s.MaxConns, "imap-max-conns", DefaultMaxConns, "most IMAP connections open at once to the server (one per mailbox being read)")
	fs.StringVar(&s.WatchUsersFile, "imap-watch-users-file", "", `JSON file of the users whose INBOX the IMAP watcher watches with IDLE (one connection each), publishing their exact unread count on every change: {"users":[{"tenant":"example.com","user":"alice@example.com"}]} (a --imap-users-file whose entries all name their tenant serves too); logs in as the counter does (--imap-addr, --imap-master-user or --imap-users-file); without it the watcher is disabled`)
	fs.IntVar(&s.WatchMaxConns, "imap-watch-max-conns", DefaultWatchMaxConns, "most IMAP connections the watcher opens to the server, one per watched user: more watched users than this is a start-up error")
	fs.DurationVar(&s.WatchSettle, "imap-watch-settle", DefaultSettle, "how long the IMAP watcher gathers a burst of changes of a mailbox, from its first change, before it reads the unread count")
	fs.Float64Var(&s.WatchLoginsPerSecond, "imap-watch-logins-per-second", DefaultLoginsPerSecond, "most IMAP logins per second the watcher makes, at start and when reconnecting, so that a restart does not storm the server")
	fs.IntVar(&s.WatchLoginsInFlight, "imap-watch-logins-in-flight", DefaultLoginsInFlight, "most IMAP connections the watcher opens at once (connecting, TLS, logging in): a slow server slows the watcher down instead of timing logins out")
	return s
}

// Enabled reports whether the settings name an IMAP server.
func (s *Settings) Enabled() bool { return s.Addr != "" }

// Counter reads the password or users file and builds the counter.
func (s *Settings) Counter() (*Counter, error) {
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	return New(cfg)
}

// WatchEnabled reports whether the settings name a watch list: then the
// watcher is configured, and a missing setting is an error rather than a
// disabled watcher.
func (s *Settings) WatchEnabled() bool { return s.WatchUsersFile != "" }

// Watcher reads the password or users file and the watch list and builds
// the watcher, which hands its snapshots to publish and registers its
// metrics on reg (none when nil).
func (s *Settings) Watcher(publish PublishFunc, reg prometheus.Registerer, log zerolog.Logger) (*Watcher, error) {
	if s.WatchUsersFile == "" {
		return nil, errors.New("IMAP watcher: --imap-watch-users-file is required")
	}
	if s.Addr == "" {
		return nil, errors.New("IMAP watcher: --imap-addr is required with --imap-watch-users-file")
	}
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	users, err := LoadWatchList(s.WatchUsersFile)
	if err != nil {
		return nil, err
	}
	return NewWatcher(WatchConfig{
		Server: cfg, Users: users, MaxConns: s.WatchMaxConns, Settle: s.WatchSettle,
		LoginsPerSecond: s.WatchLoginsPerSecond, LoginsInFlight: s.WatchLoginsInFlight, Publish: publish, Registerer: reg, Log: log,
	})
}

// config reads the password or users file into the server's Config, which
// the counter and the watcher share.
func (s *Settings) config() (Config, error) {
	mode, err := ParseTLSMode(s.TLS)
	if err != nil {
		return Config{}, err
	}
	cfg := Config{
		Addr: s.Addr, TLS: mode, InsecurePlain: mode == TLSNone,
		MasterSeparator: s.MasterSeparator, Tenants: s.Tenants, MaxConns: s.MaxConns,
	}
	switch {
	case s.UsersFile != "" && (s.MasterUser != "" || s.MasterPasswordFile != ""):
		return Config{}, errors.New("IMAP: set --imap-users-file or --imap-master-user, not both")
	case s.UsersFile != "":
		cfg.Login = LoginUserPasswords
		if cfg.Users, err = LoadUsersFile(s.UsersFile); err != nil {
			return Config{}, err
		}
	case s.MasterUser != "":
		if cfg.Login, err = ParseLoginMethod(s.Login); err != nil {
			return Config{}, err
		}
		if s.MasterPasswordFile == "" {
			return Config{}, errors.New("IMAP: --imap-master-password-file is required with --imap-master-user")
		}
		cfg.MasterUser = s.MasterUser
		if cfg.MasterPassword, err = readSecretFile(s.MasterPasswordFile); err != nil {
			return Config{}, err
		}
	default:
		return Config{}, errors.New("IMAP: --imap-master-user or --imap-users-file is required with --imap-addr")
	}
	return cfg, nil
}

// readSecretFile reads the one-line master password, without its line end.
func readSecretFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading IMAP master password: %w", err)
	}
	secret := strings.TrimRight(string(data), "\r\n")
	if secret == "" {
		return "", fmt.Errorf("reading IMAP master password: %s is empty", path)
	}
	return secret, nil
}
