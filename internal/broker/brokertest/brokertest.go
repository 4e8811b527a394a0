// Package brokertest starts a real embedded NATS JetStream server for tests,
// provisioned with the pushproxy layout.
package brokertest

import (
	"context"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
)

// Option changes the layout or the connection of a test server.
type Option func(*settings)

type settings struct {
	layout broker.Layout
	listen string
}

// WithLayout provisions l instead of the default layout.
func WithLayout(l broker.Layout) Option { return func(s *settings) { s.layout = l } }

// WithPartitions provisions the MAIL stream with n partitions.
func WithPartitions(n int) Option { return func(s *settings) { s.layout.Partitions = n } }

// WithListen makes the server accept network clients on a loopback port,
// for tests that connect several clients or stop the server.
func WithListen() Option { return func(s *settings) { s.listen = "127.0.0.1:-1" } }

// Start starts an embedded JetStream server in a temporary folder, connects
// to it and provisions the layout. Everything stops when the test ends.
func Start(t testing.TB, opts ...Option) *broker.Conn {
	t.Helper()
	s := settings{layout: broker.DefaultLayout()}
	for _, o := range opts {
		o(&s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := broker.Connect(ctx, broker.Options{Name: t.Name(), Embedded: true, StoreDir: t.TempDir(), Listen: s.listen})
	if err != nil {
		t.Fatalf("starting embedded NATS: %v", err)
	}
	t.Cleanup(conn.Close)
	if err := broker.Provision(ctx, conn.JS, s.layout); err != nil {
		t.Fatalf("provisioning: %v", err)
	}
	return conn
}

// Keyer returns the deployment's keyer of a provisioned server.
func Keyer(t testing.TB, conn *broker.Conn) *events.Keyer {
	t.Helper()
	k, err := broker.Keyer(context.Background(), conn.JS)
	if err != nil {
		t.Fatalf("reading subject key: %v", err)
	}
	return k
}
