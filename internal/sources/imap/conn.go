package imap

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// sessionConn is the connection of one session. Once this package closed
// it, it reads as ended (io.EOF) rather than failing, so that the client
// does not report the close the package meant; a read that failed on its
// deadline is remembered (the client reports only a closed connection). Once it is winding down
// (windDown), no deadline set on it, by this package or by the client
// (which sets one before each command), reaches past the wind-down
// deadline.
type sessionConn struct {
	net.Conn
	closed atomic.Bool
	// timedOut tells that a read failed on its deadline.
	timedOut atomic.Bool

	mu sync.Mutex
	// limit, when set, is the latest deadline allowed; deadline is the
	// one SetDeadline set last.
	limit, deadline time.Time
}

func newSessionConn(c net.Conn) *sessionConn { return &sessionConn{Conn: c} }

// Read reads, io.EOF once this package closed the connection.
func (c *sessionConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.closed.Load() {
		return n, io.EOF
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.timedOut.Store(true)
	}
	return n, err
}

// Close closes the connection; reads then end with io.EOF.
func (c *sessionConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// SetDeadline sets the deadline of reads and writes, within the wind-down
// limit.
func (c *sessionConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = c.capped(t)
	return c.Conn.SetDeadline(c.deadline)
}

// SetReadDeadline sets the deadline of reads, within the wind-down limit.
func (c *sessionConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetReadDeadline(c.capped(t))
}

// SetWriteDeadline sets the deadline of writes, within the wind-down
// limit.
func (c *sessionConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetWriteDeadline(c.capped(t))
}

// capped is t within the limit (the zero time, no deadline, is after
// every limit). c.mu is held.
func (c *sessionConn) capped(t time.Time) time.Time {
	if !c.limit.IsZero() && (t.IsZero() || t.After(c.limit)) {
		return c.limit
	}
	return t
}

// windDown gives the session until now+grace at most: reads and writes
// fail after that, whatever deadline is set later. An earlier deadline
// stays.
func (c *sessionConn) windDown(grace time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := time.Now().Add(grace)
	if !c.limit.IsZero() && c.limit.Before(limit) {
		return
	}
	c.limit = limit
	if c.deadline.IsZero() || c.deadline.After(limit) {
		c.deadline = limit
		_ = c.Conn.SetDeadline(limit)
	}
}
