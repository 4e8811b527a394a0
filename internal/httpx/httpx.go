// Package httpx is the HTTP client plumbing for long-lived connections to
// one peer: the push providers' clients to APNs, FCM and Web Push, and
// the dispatchers' and monitor's client to the relay (relayclient). One
// transport builder, and bounded reading of response bodies.
package httpx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// MaxBody is the most of a push service's response body that is read; the
// rest is discarded so the connection can be reused.
const MaxBody = 64 << 10

// ClientConfig tunes NewClient.
type ClientConfig struct {
	// Timeout bounds a whole request, response body included. 0 means 30s.
	Timeout time.Duration
	// HTTP2Only disables HTTP/1.1 (APNs speaks only HTTP/2).
	HTTP2Only bool
	// DialControl, if set, is called before each connection is made and may
	// refuse the address (see net.Dialer.Control). Setting it also turns off
	// the environment's HTTP proxy, whose address is all the control would
	// see.
	DialControl func(network, address string, c syscall.RawConn) error
	// RootCAs, if set, are the certificate authorities trusted for the push
	// service's TLS certificate instead of the system's (the relay passes
	// the system roots plus its --provider-ca-file). Nil means the system
	// roots.
	RootCAs *x509.CertPool
	// MaxIdleConnsPerHost bounds the idle connections kept to the peer; 0
	// means 100.
	MaxIdleConnsPerHost int
	// NoRedirects returns a redirect as the answer instead of following
	// it (a relay that redirects is misconfigured, and the request's
	// credentials must not follow it elsewhere).
	NoRedirects bool
	// PingAfter is how long an HTTP/2 connection may receive nothing
	// before it is pinged; one whose ping is not answered within as long
	// is closed, and its requests fail. It also bounds the TLS handshake,
	// at twice as long (10s at most). 0 means 15s. A peer that hangs (its process
	// stopped: its kernel still accepts the connection) is found out
	// within twice PingAfter, where its requests would wait out their
	// whole Timeout.
	PingAfter time.Duration
	// WriteGate, if set, is asked before every write on the client's
	// connections, just before bytes go out; an error fails the write,
	// and with it the connection and its requests. A dispatcher uses it
	// to send nothing once it may have been counted gone. The request's
	// error does not always wrap the gate's: ask the gate again.
	WriteGate func() error
}

// gatedConn is a connection whose writes ask a gate first.
type gatedConn struct {
	net.Conn
	gate func() error
}

// Write writes p unless the gate refuses.
func (c *gatedConn) Write(p []byte) (int, error) {
	if err := c.gate(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// NewClient returns an HTTP client for one peer: TLS 1.2 or later,
// HTTP/2 when the server offers it (with ping health checks on idle
// connections), and enough idle connections for concurrent sends.
func NewClient(cfg ClientConfig) *http.Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxIdleConnsPerHost <= 0 {
		cfg.MaxIdleConnsPerHost = 100
	}
	if cfg.PingAfter <= 0 {
		cfg.PingAfter = 15 * time.Second
	}
	dialer := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 15 * time.Second,
		Control:   cfg.DialControl,
	}
	dial := dialer.DialContext
	if gate := cfg.WriteGate; gate != nil {
		dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, address)
			if err != nil {
				return nil, err
			}
			return &gatedConn{Conn: c, gate: gate}, nil
		}
	}
	t := &http.Transport{
		DialContext:           dial,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs},
		TLSHandshakeTimeout:   min(2*cfg.PingAfter, 10*time.Second),
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: cfg.PingAfter,
			PingTimeout:     cfg.PingAfter,
		},
	}
	if cfg.DialControl == nil {
		// With a proxy the dial control would see only the proxy's address,
		// so a proxy is used only when addresses are not being checked.
		t.Proxy = http.ProxyFromEnvironment
	}
	if cfg.HTTP2Only {
		var p http.Protocols
		p.SetHTTP2(true)
		t.Protocols = &p
	}
	c := &http.Client{Transport: t, Timeout: cfg.Timeout}
	if cfg.NoRedirects {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// ReadBody reads at most MaxBody bytes of r and discards the rest, so the
// connection can be reused. A read error is ignored: an error body is only
// ever used to explain a failure that is already known.
func ReadBody(r io.Reader) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, MaxBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 4*MaxBody))
	return b
}
