package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/emersion/go-imap/client"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// connector opens logged-in sessions to the server of a Config: the part
// the Counter and the Watcher share (TLS, dialling, the login of a
// mailbox's user). It never changes after it is built, so it is safe for
// concurrent use.
type connector struct {
	cfg     Config
	tls     *tls.Config
	tenants map[string]bool
}

// newConnector checks cfg, fills in its defaults and builds the connector.
func newConnector(cfg Config) (connector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return connector{}, err
	}
	c := connector{cfg: cfg}
	if cfg.TLS != TLSNone {
		c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.TLSConfig != nil {
			c.tls = cfg.TLSConfig.Clone()
		}
		if c.tls.ServerName == "" {
			host, _, _ := net.SplitHostPort(cfg.Addr)
			c.tls.ServerName = host
		}
	}
	if len(cfg.Tenants) > 0 {
		c.tenants = make(map[string]bool, len(cfg.Tenants))
		for _, t := range cfg.Tenants {
			c.tenants[strings.ToLower(t)] = true
		}
	}
	return c, nil
}

// loginFor is how to log in as the mailbox's user; sources.ErrNotServed
// when this server does not serve the mailbox.
func (c *connector) loginFor(box sources.Mailbox) (login, error) {
	if c.tenants != nil && !c.tenants[strings.ToLower(box.Tenant)] {
		return login{}, sources.ErrNotServed
	}
	if box.User == "" || box.Name == "" {
		return login{}, errors.New("IMAP: a mailbox needs a user and a name")
	}
	switch c.cfg.Login {
	case LoginSASLPlain:
		return login{sasl: true, authzid: box.User, name: c.cfg.MasterUser, password: c.cfg.MasterPassword, master: true}, nil
	case LoginUserPasswords:
		password, ok := c.cfg.Users.Password(box.Tenant, box.User)
		if !ok {
			return login{}, sources.ErrNotServed
		}
		return login{name: box.User, password: password}, nil
	default:
		name, err := masterLoginName(box.User, c.cfg.MasterSeparator, c.cfg.MasterUser)
		if err != nil {
			return login{}, err
		}
		return login{name: name, password: c.cfg.MasterPassword, master: true}, nil
	}
}

// masterLoginName is the login name of a master user acting as user:
// "user<separator>master". A user containing the separator is refused, as
// the server could not tell where the user's name ends.
func masterLoginName(user, separator, master string) (string, error) {
	if strings.Contains(user, separator) {
		return "", fmt.Errorf("IMAP: user %q contains the master user separator %q", sources.Clip(user), separator)
	}
	return user + separator + master, nil
}

// open connects, reads the greeting, secures the connection and logs in.
// While it runs, the end of ctx closes the connection; afterwards the
// caller owns the connection and closes it. A login the server refused is
// a *loginError.
func (c *connector) open(ctx context.Context, l login) (*client.Client, *sessionConn, error) {
	raw, err := c.dial(ctx)
	if err != nil {
		return nil, nil, failed(ctx, "connecting", err)
	}
	conn := newSessionConn(raw)
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	cl, err := client.New(conn)
	if err != nil {
		_ = conn.Close()
		return nil, nil, failed(ctx, "reading the greeting", err)
	}
	// The client logs to the standard error by default; this package
	// reports its errors itself.
	cl.ErrorLog = discardLog{}
	if c.cfg.TLS == TLSStartTLS {
		if err := c.startTLS(cl); err != nil {
			_ = conn.Close()
			return nil, nil, failed(ctx, "starting TLS", err)
		}
	}
	if err := l.run(cl); err != nil {
		_ = conn.Close()
		return nil, nil, failed(ctx, "logging in", err)
	}
	return cl, conn, nil
}

// dial connects to the server: with TLS for TLSImplicit, and only to a
// loopback address for TLSNone.
func (c *connector) dial(ctx context.Context) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: c.cfg.DialTimeout}
	if c.cfg.TLS == TLSImplicit {
		return (&tls.Dialer{NetDialer: dialer, Config: c.tls}).DialContext(ctx, "tcp", c.cfg.Addr)
	}
	conn, err := dialer.DialContext(ctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if c.cfg.TLS == TLSNone && !isLoopbackAddr(conn.RemoteAddr()) {
		_ = conn.Close()
		return nil, fmt.Errorf("refusing plain text to %s, which is not a loopback address", conn.RemoteAddr())
	}
	return conn, nil
}

// startTLS upgrades the connection, which the server must offer.
func (c *connector) startTLS(cl *client.Client) error {
	ok, err := cl.SupportStartTLS()
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the server does not offer STARTTLS")
	}
	return cl.StartTLS(c.tls)
}

// discardLog is an imap.Logger that drops the client's log lines.
type discardLog struct{}

// Printf drops a log line.
func (discardLog) Printf(string, ...any) {}

// Println drops a log line.
func (discardLog) Println(...any) {}
