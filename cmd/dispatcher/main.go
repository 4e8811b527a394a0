// Command dispatcher turns mailbox events into unread-count pushes: it
// consumes the MAIL stream, keeps each user's unread count, coalesces bursts
// and pushes the counts to the relay. It is a thin main over
// internal/dispatcher.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/daemon"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

// DefaultHTTPAddr is where the dispatcher serves /healthz, /readyz and /metrics.
const DefaultHTTPAddr = ":8026"

const description = `Consumes mailbox events from NATS JetStream (stream MAIL), keeps each user's
unread count (KV unread), coalesces bursts of changes and pushes the counts to
the relay of the proxy settings (pushctl proxy enable), signed with the S2S
certificate (pushctl auth new-certificate). Pushes that cannot be delivered go
to stream PUSH_DEAD; pushes sent are recorded in PUSH_SENT.

Run as many dispatchers as you like against the same NATS: they share the
MAIL partitions among themselves (up to one dispatcher per partition) and take
over a stopped one's partitions within about the ack wait plus the pinned TTL.
While the proxy is disabled, counts are kept and nothing is pushed.

Serves /healthz, /readyz and /metrics on --http-addr. SIGINT or SIGTERM hands
the partitions over: pending pushes are flushed first.`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cmd := daemon.New("dispatcher", "dispatcher [flags]", description, stderr, daemon.Options{Provision: true})
	cfg := dispatcher.Flags(cmd.Flags)
	httpAddr := cmd.Flags.String("http-addr", DefaultHTTPAddr, "host:port of the HTTP server for /healthz, /readyz and /metrics")
	certDir := cmd.Flags.String("cert-dir", "", "folder of the S2S certificates (default: the one in the auth configuration)")
	return cmd.Main(ctx, args, getenv, func(ctx context.Context, env daemon.Env) error {
		store, err := settings.Open(ctx, env.Conn.JS)
		if err != nil {
			return fmt.Errorf("%w (is the layout provisioned? start with --provision)", err)
		}
		cfg.Tokens = onprem.NewSource(store, *certDir)
		d, err := dispatcher.New(ctx, *cfg, env.Conn, env.Log, env.Registry)
		if err != nil {
			return err
		}
		ln, err := service.Listen(*httpAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		service.Handle(mux, env.Registry, func(ctx context.Context) error { return broker.Ready(ctx, env.Conn.JS) }, d.Ready)
		// The HTTP server outlives the dispatcher's hand-over, so that
		// /readyz and /metrics answer until the partitions are released.
		serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
		served := make(chan error, 1)
		go func() { served <- service.Serve(serveCtx, env.Log, ln, mux, 5*time.Second) }()
		err = d.Run(ctx)
		stopServe()
		return errors.Join(err, <-served)
	})
}
