// Package broker connects to NATS JetStream, either an external cluster or a
// server embedded in the process, and provisions the streams and key-value
// buckets of the pushproxy layout.
package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Options says how to reach NATS.
//
// With Embedded set, a NATS server with JetStream runs inside the process,
// its data in StoreDir, listening on Listen (host:port) if that is set and
// reachable only in-process otherwise. Without it, the client connects to
// URLs with the given credentials and TLS files.
type Options struct {
	// Name is the client connection name shown by the server.
	Name string

	URLs      []string
	User      string
	Password  string
	Token     string
	CredsFile string
	CAFile    string
	CertFile  string
	KeyFile   string

	Embedded bool
	StoreDir string
	Listen   string

	// Log receives the errors the server reports about the connection
	// outside any request: a permission violation (a subscribe or a
	// request the user may not make, which otherwise only times out), a
	// slow consumer. At most a few lines a minute; none when zero.
	Log zerolog.Logger
}

// asyncErrorsPerMinute bounds the lines Options.Log gets a minute.
const asyncErrorsPerMinute = 5

// errorHandler logs the connection's asynchronous errors to log.
func errorHandler(log zerolog.Logger) nats.ErrHandler {
	log = log.Sample(&zerolog.BurstSampler{Burst: asyncErrorsPerMinute, Period: time.Minute})
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		e := log.Error().Err(err)
		if sub != nil {
			e = e.Str("subject", sub.Subject)
		}
		e.Msg("NATS reported an error on the connection")
	}
}

// disconnectHandler logs a lost connection: until the client reconnects,
// requests time out and publishes wait in its buffer. Closing the
// connection is not logged.
func disconnectHandler(log zerolog.Logger) nats.ConnErrHandler {
	return func(nc *nats.Conn, err error) {
		if nc.IsClosed() || nc.IsDraining() {
			return
		}
		log.Warn().Err(err).Msg("lost the connection to NATS; reconnecting")
	}
}

// reconnectHandler logs the connection coming back, and to which server.
func reconnectHandler(log zerolog.Logger) nats.ConnHandler {
	return func(nc *nats.Conn) {
		log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
	}
}

// Conn is a NATS connection with its JetStream context, and the embedded
// server when there is one.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream

	server *Embedded
}

// syncQueueLen is how many messages a synchronous subscription buffers.
// The most one is sent is a batched direct get's answer (the server gives
// at most 1,024 entries and an end-of-batch status); the library's
// default of 65,536 made every such read allocate and clear a 512 KiB
// channel, which a cold cache of devices does once per 32 users.
const syncQueueLen = 4096

// pingInterval and maxPingsOut bound how long a client stays on a server
// that stopped answering without closing the connection (stopped,
// frozen, cut off without a reset): it moves to another after 4 to 6 s.
// With the library's defaults (2 minutes, 2 outstanding) it stayed up to
// 6 minutes; the stream-leader-sigstop chaos scenario saw ingest answer
// 503 and partitions apply nothing for the whole of a 20 s stop.
const (
	pingInterval = 2 * time.Second
	maxPingsOut  = 2
)

// ErrNoServers is returned by Connect when neither URLs nor Embedded is set.
var ErrNoServers = errors.New("no NATS server: give --nats-url or run embedded")

// Connect connects to NATS as opts says; with opts.Embedded it first starts
// the embedded server. The connection keeps reconnecting forever once it
// is established, so that a NATS restart is only a pause.
func Connect(ctx context.Context, opts Options) (*Conn, error) {
	var (
		srv    *Embedded
		natsOp []nats.Option
		url    string
	)
	natsOp = append(natsOp,
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.ErrorHandler(errorHandler(opts.Log)),
		nats.DisconnectErrHandler(disconnectHandler(opts.Log)),
		nats.ReconnectHandler(reconnectHandler(opts.Log)),
		nats.SyncQueueLen(syncQueueLen),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
	)
	switch {
	case opts.Embedded:
		var err error
		srv, err = StartEmbedded(opts.StoreDir, opts.Listen)
		if err != nil {
			return nil, err
		}
		natsOp = append(natsOp, nats.InProcessServer(srv.Server))
	case len(opts.URLs) > 0:
		url = joinURLs(opts.URLs)
		natsOp = append(natsOp, authOptions(opts)...)
	default:
		return nil, ErrNoServers
	}

	nc, err := nats.Connect(url, natsOp...)
	if err != nil {
		shutdown(srv)
		return nil, fmt.Errorf("connecting to NATS %s: %w", describe(opts), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		shutdown(srv)
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	return &Conn{NC: nc, JS: js, server: srv}, nil
}

// Server is the embedded server, or nil when connected to an external one.
func (c *Conn) Server() *Embedded { return c.server }

// ClientURL is a URL other processes can use to reach the embedded server,
// or "" when it does not listen on the network.
func (c *Conn) ClientURL() string {
	if c.server == nil || c.server.Addr() == nil {
		return ""
	}
	return c.server.ClientURL()
}

// Close drains the connection, waiting for pending publishes, and stops the
// embedded server if there is one.
func (c *Conn) Close() {
	if c.NC != nil && !c.NC.IsClosed() {
		done := make(chan struct{})
		c.NC.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := c.NC.Drain(); err == nil {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.NC.Close()
			}
		} else {
			c.NC.Close()
		}
	}
	shutdown(c.server)
}

// embeddedReadyTimeout bounds how long StartEmbedded waits for the server.
const embeddedReadyTimeout = 30 * time.Second

// StartEmbedded starts a NATS server with JetStream storing into dir. listen
// is host:port to accept network clients, or "" for in-process clients only.
//
// The directory has one owner at a time: StartEmbedded takes an exclusive
// lock on dir/LockFile first, and fails at once, naming the holder's pid,
// while another process holds it. The lock is released by the
// Embedded's Shutdown, which Conn.Close calls. A server that cannot
// start (address in use, permissions, a full disk) fails as soon as it
// says so, with its own words, instead of after the ready timeout.
func StartEmbedded(dir, listen string) (*Embedded, error) {
	if dir == "" {
		return nil, errors.New("embedded NATS needs a store directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving store directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("creating store directory: %w", err)
	}
	lock, err := lockDir(abs)
	if err != nil {
		return nil, err
	}
	sopts := &server.Options{
		ServerName: "pushproxy-embedded",
		JetStream:  true,
		StoreDir:   abs,
		DontListen: listen == "",
		NoSigs:     true,
	}
	if listen != "" {
		host, portText, err := net.SplitHostPort(listen)
		if err != nil {
			lock.release()
			return nil, fmt.Errorf("embedded NATS listen address %q: %w", listen, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			lock.release()
			return nil, fmt.Errorf("embedded NATS listen port %q: %w", portText, err)
		}
		sopts.Host, sopts.Port = host, port
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("configuring embedded NATS: %w", err)
	}
	logs := newStartLog()
	srv.SetLoggerV2(logs, false, false, false)
	go srv.Start()
	ready := make(chan bool, 1)
	go func() { ready <- srv.ReadyForConnections(embeddedReadyTimeout) }()
	select {
	case ok := <-ready:
		if ok {
			return &Embedded{Server: srv, lock: lock}, nil
		}
		srv.Shutdown()
		lock.release()
		return nil, fmt.Errorf("embedded NATS did not become ready within %s%s", embeddedReadyTimeout, logs.last())
	case msg := <-logs.fatal:
		srv.Shutdown()
		lock.release()
		return nil, fmt.Errorf("embedded NATS could not start: %s", msg)
	}
}

func shutdown(srv *Embedded) {
	if srv != nil {
		srv.Shutdown()
	}
}

func authOptions(o Options) []nats.Option {
	var out []nats.Option
	if o.User != "" {
		out = append(out, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		out = append(out, nats.Token(o.Token))
	}
	if o.CredsFile != "" {
		out = append(out, nats.UserCredentials(o.CredsFile))
	}
	if o.CAFile != "" {
		out = append(out, nats.RootCAs(o.CAFile))
	}
	if o.CertFile != "" || o.KeyFile != "" {
		out = append(out, nats.ClientCert(o.CertFile, o.KeyFile))
	}
	return out
}

func joinURLs(urls []string) string {
	out := ""
	for i, u := range urls {
		if i > 0 {
			out += ","
		}
		out += u
	}
	return out
}

func describe(o Options) string {
	if o.Embedded {
		return "(embedded, " + o.StoreDir + ")"
	}
	return joinURLs(o.URLs)
}
