package imap

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// TLSMode is how the connection to the IMAP server is secured.
type TLSMode string

// The TLS modes.
const (
	// TLSImplicit speaks TLS from the first byte (imaps, usually port 993).
	TLSImplicit TLSMode = "implicit"
	// TLSStartTLS upgrades a plain connection with STARTTLS before logging
	// in (usually port 143); a server that does not offer it is an error.
	TLSStartTLS TLSMode = "starttls"
	// TLSNone sends passwords in plain text: only to a loopback address,
	// and only with Config.InsecurePlain.
	TLSNone TLSMode = "none"
)

// ParseTLSMode reads a TLS mode's name (implicit, starttls or none).
func ParseTLSMode(s string) (TLSMode, error) {
	switch m := TLSMode(strings.ToLower(strings.TrimSpace(s))); m {
	case TLSImplicit, TLSStartTLS, TLSNone:
		return m, nil
	}
	return "", fmt.Errorf("IMAP TLS mode %q: want implicit, starttls or none", s)
}

// LoginMethod is how the counter logs in as a mailbox's user.
type LoginMethod string

// The login methods.
const (
	// LoginSeparator logs in with LOGIN "<user><separator><master>" and
	// the master password.
	LoginSeparator LoginMethod = "separator"
	// LoginSASLPlain authenticates with AUTHENTICATE PLAIN: authorization
	// identity the user, authentication identity the master user.
	LoginSASLPlain LoginMethod = "plain"
	// LoginUserPasswords logs in with LOGIN as the user, with its password
	// from Config.Users.
	LoginUserPasswords LoginMethod = "users"
)

// ParseLoginMethod reads a master login method's name (separator or
// plain).
func ParseLoginMethod(s string) (LoginMethod, error) {
	switch m := LoginMethod(strings.ToLower(strings.TrimSpace(s))); m {
	case LoginSeparator, LoginSASLPlain:
		return m, nil
	}
	return "", fmt.Errorf("IMAP login method %q: want separator or plain", s)
}

// Defaults of Config.
const (
	DefaultMasterSeparator = "*"
	DefaultMaxConns        = 8
	DefaultDialTimeout     = 10 * time.Second
	DefaultTimeout         = 30 * time.Second
)

// Config configures a Counter.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// TLS secures the connection; empty is TLSImplicit.
	TLS TLSMode
	// TLSConfig verifies the server (roots, server name); nil verifies it
	// against the system's roots under Addr's host name.
	TLSConfig *tls.Config
	// InsecurePlain allows TLSNone, to a loopback address only.
	InsecurePlain bool
	// Login is how the counter logs in; empty is LoginSeparator.
	Login LoginMethod
	// MasterUser and MasterPassword log in as every user (LoginSeparator
	// and LoginSASLPlain).
	MasterUser     string
	MasterPassword string
	// MasterSeparator joins user and master user in LoginSeparator's login
	// name; empty is DefaultMasterSeparator.
	MasterSeparator string
	// Users holds each user's password (LoginUserPasswords).
	Users *Users
	// Tenants are the tenants whose mailboxes the server holds; a mailbox
	// of another tenant is not served. Empty: every tenant.
	Tenants []string
	// MaxConns bounds the connections open at once; zero is
	// DefaultMaxConns.
	MaxConns int
	// DialTimeout bounds connecting (with the TLS handshake of
	// TLSImplicit); zero is DefaultDialTimeout.
	DialTimeout time.Duration
	// Timeout bounds one mailbox's whole session, from connecting to
	// logging out; zero is DefaultTimeout.
	Timeout time.Duration
}

// withDefaults checks c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	if c.TLS == "" {
		c.TLS = TLSImplicit
	}
	if c.Login == "" {
		c.Login = LoginSeparator
	}
	if c.MasterSeparator == "" {
		c.MasterSeparator = DefaultMasterSeparator
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil || host == "" || port == "" {
		return c, fmt.Errorf("IMAP address %q: want host:port", c.Addr)
	}
	if _, err := ParseTLSMode(string(c.TLS)); err != nil {
		return c, err
	}
	if c.TLS == TLSNone {
		if !c.InsecurePlain {
			return c, errors.New("IMAP without TLS sends passwords in plain text: allow it explicitly (InsecurePlain)")
		}
		if !isLoopbackHost(host) {
			return c, fmt.Errorf("IMAP without TLS is allowed only to a loopback address, not %q", host)
		}
	}
	switch c.Login {
	case LoginSeparator, LoginSASLPlain:
		if c.MasterUser == "" || c.MasterPassword == "" {
			return c, fmt.Errorf("IMAP login %s needs a master user and its password", c.Login)
		}
		if c.Users != nil {
			return c, errors.New("IMAP: give a master user or per-user passwords, not both")
		}
	case LoginUserPasswords:
		if c.Users == nil {
			return c, errors.New("IMAP login with per-user passwords needs the users")
		}
		if c.MasterUser != "" {
			return c, errors.New("IMAP: give a master user or per-user passwords, not both")
		}
	default:
		return c, fmt.Errorf("IMAP login method %q: want separator, plain or users", c.Login)
	}
	if c.Login == LoginSeparator && strings.Contains(c.MasterUser, c.MasterSeparator) {
		return c, fmt.Errorf("IMAP master user %q contains the separator %q", c.MasterUser, c.MasterSeparator)
	}
	return c, nil
}

// isLoopbackHost reports whether host is "localhost" or a loopback IP.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isLoopbackAddr reports whether a connection's address is a loopback IP.
func isLoopbackAddr(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
