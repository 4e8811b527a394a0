package imap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// PublishFunc stores events durably (ingest's validated publish path). An
// error means that none of them is known to be stored: the watcher keeps
// them and tries again later (the change ids make a repeat harmless).
type PublishFunc func(ctx context.Context, evs []events.Event) error

// Defaults of WatchConfig.
const (
	DefaultWatchMaxConns   = 10000
	DefaultLoginsPerSecond = 50
	// DefaultLoginsInFlight is WatchConfig.LoginsInFlight's default: at 50
	// logins a second, room for logins of up to 0.4 s each.
	DefaultLoginsInFlight = 20
	DefaultSettle         = 200 * time.Millisecond
	// DefaultIdleRefresh re-issues IDLE well within RFC 2177's 29 minutes.
	DefaultIdleRefresh     = 25 * time.Minute
	DefaultPollInterval    = time.Minute
	DefaultRetryMin        = time.Second
	DefaultRetryMax        = 2 * time.Minute
	DefaultLoginRetryMin   = 30 * time.Second
	DefaultLoginRetryMax   = 10 * time.Minute
	DefaultShutdownTimeout = 3 * time.Second
)

// Limits of the watcher.
const (
	// MaxIdleRefresh is RFC 2177's bound: a client re-issues IDLE at
	// least every 29 minutes, or the server may log it out as inactive.
	MaxIdleRefresh = 29 * time.Minute
	// MaxPublishBatch bounds the events of one PublishFunc call.
	MaxPublishBatch = 100
)

// WatchConfig configures a Watcher.
type WatchConfig struct {
	// Server is how to reach the server and log in, as for the Counter.
	// Its MaxConns is the Counter's and is not used here; its Timeout
	// bounds connecting and logging in, and each command other than IDLE.
	Server Config
	// Users are the mailboxes watched, one connection each; a mailbox
	// without a name is events.Inbox. Each must be served by Server (its
	// tenant among Server.Tenants, its password among Server.Users).
	Users []sources.Mailbox
	// MaxConns bounds the connections to the server; more Users than that
	// is an error. Zero is DefaultWatchMaxConns.
	MaxConns int
	// LoginsPerSecond bounds how fast connections are opened, at start and
	// when reconnecting; zero is DefaultLoginsPerSecond.
	LoginsPerSecond float64
	// LoginsInFlight bounds the connections being opened at once
	// (connecting, TLS, logging in): a server slower than LoginsPerSecond
	// then slows the watcher down instead of letting logins pile up past
	// the server's timeout and be tried again. Zero is
	// DefaultLoginsInFlight.
	LoginsInFlight int
	// Settle is how long a burst of changes is gathered, from its first
	// change, before the count is read; zero is DefaultSettle.
	Settle time.Duration
	// IdleRefresh is how often IDLE is ended and issued again (and the
	// count read again), at most MaxIdleRefresh; zero is
	// DefaultIdleRefresh.
	IdleRefresh time.Duration
	// PollInterval is how often a server without IDLE is asked for the
	// count; zero is DefaultPollInterval.
	PollInterval time.Duration
	// RetryMin and RetryMax bound the randomised exponential back-off
	// before reconnecting and before publishing again; zero is
	// DefaultRetryMin and DefaultRetryMax.
	RetryMin, RetryMax time.Duration
	// LoginRetryMin and LoginRetryMax bound the back-off after the server
	// refused a user's login; zero is DefaultLoginRetryMin and
	// DefaultLoginRetryMax.
	LoginRetryMin, LoginRetryMax time.Duration
	// ShutdownTimeout bounds logging out and the last publish once Run's
	// context ended; zero is DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Publish stores the snapshots. Required.
	Publish PublishFunc
	// Registerer, when set, receives the watcher's metrics.
	Registerer prometheus.Registerer
	// Log receives a line per refused login (warn) and per lost
	// connection (debug).
	Log zerolog.Logger
	// Sleep waits d or until ctx ends (returning its error); a timer when
	// nil. Tests replace it to see the back-off without waiting it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the time of the snapshots; time.Now when nil.
	Now func() time.Time
}

// withDefaults checks c and fills in its defaults (Server is checked by
// newConnector).
func (c WatchConfig) withDefaults() (WatchConfig, error) {
	if c.Publish == nil {
		return c, errors.New("IMAP watcher: a publish function is required")
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultWatchMaxConns
	}
	if c.LoginsPerSecond <= 0 {
		c.LoginsPerSecond = DefaultLoginsPerSecond
	}
	if c.LoginsInFlight <= 0 {
		c.LoginsInFlight = DefaultLoginsInFlight
	}
	if c.Settle <= 0 {
		c.Settle = DefaultSettle
	}
	if c.IdleRefresh <= 0 {
		c.IdleRefresh = DefaultIdleRefresh
	}
	if c.IdleRefresh > MaxIdleRefresh {
		return c, fmt.Errorf("IMAP watcher: IDLE refresh %s is longer than RFC 2177's %s", c.IdleRefresh, MaxIdleRefresh)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	c.RetryMin, c.RetryMax = orDefault(c.RetryMin, DefaultRetryMin), orDefault(c.RetryMax, DefaultRetryMax)
	c.LoginRetryMin, c.LoginRetryMax = orDefault(c.LoginRetryMin, DefaultLoginRetryMin), orDefault(c.LoginRetryMax, DefaultLoginRetryMax)
	if c.RetryMin > c.RetryMax || c.LoginRetryMin > c.LoginRetryMax {
		return c, errors.New("IMAP watcher: a minimum retry wait is longer than its maximum")
	}
	c.ShutdownTimeout = orDefault(c.ShutdownTimeout, DefaultShutdownTimeout)
	// The sessions bound their setup and commands with the server's
	// timeouts, so those need their defaults here too.
	c.Server.Timeout = orDefault(c.Server.Timeout, DefaultTimeout)
	c.Server.DialTimeout = orDefault(c.Server.DialTimeout, DefaultDialTimeout)
	if c.Sleep == nil {
		c.Sleep = service.Sleep
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if len(c.Users) > c.MaxConns {
		return c, fmt.Errorf("IMAP watcher: %d users to watch need %d connections, more than the %d allowed (raise the connection limit or split the users among watchers)",
			len(c.Users), len(c.Users), c.MaxConns)
	}
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
