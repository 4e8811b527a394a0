// Command dispatcher turns mailbox events into unread-count pushes: it
// consumes the MAIL stream, keeps each user's unread count, coalesces bursts
// and pushes the counts to the relay. It is a thin main over
// internal/dispatcher.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/flagenv"
	"github.com/pushproxy/pushproxy/internal/probe"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/settings"
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
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsOpts := broker.ConnectFlags(fs, "pushproxy-dispatcher", false)
	provision := fs.Bool("provision", false, "create or update the streams and buckets (with the layout flags) before starting")
	layout := broker.LayoutFlags(fs)
	cfg := dispatcher.Flags(fs)
	httpAddr := fs.String("http-addr", DefaultHTTPAddr, "host:port of the HTTP server for /healthz, /readyz and /metrics")
	certDir := fs.String("cert-dir", "", "folder of the S2S certificates (default: the one in the auth configuration)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	flagenv.SetUsage(fs, "dispatcher [flags]", description)
	if err := flagenv.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "dispatcher:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dispatcher: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := service.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "dispatcher:", err)
		return 2
	}

	conn, err := broker.Connect(ctx, *natsOpts)
	if err != nil {
		log.Error().Err(err).Msg("connecting to NATS")
		return 1
	}
	defer conn.Close()
	if *provision {
		if err := broker.Provision(ctx, conn.JS, *layout); err != nil {
			log.Error().Err(err).Msg("provisioning")
			return 1
		}
	}
	store, err := settings.Open(ctx, conn.JS)
	if err != nil {
		log.Error().Err(err).Msg("opening the settings (is the layout provisioned? start with --provision)")
		return 1
	}
	reg := service.NewRegistry()
	cfg.Tokens = probe.Tokens(store, *certDir)
	cfg.Registry = reg
	cfg.Log = log
	d, err := dispatcher.New(ctx, *cfg, conn)
	if err != nil {
		log.Error().Err(err).Msg("starting the dispatcher")
		if errors.Is(err, dispatcher.ErrInvalidConfig) {
			return 2
		}
		return 1
	}

	ln, err := service.Listen(*httpAddr)
	if err != nil {
		log.Error().Err(err).Msg("opening the HTTP listener")
		return 1
	}
	mux := http.NewServeMux()
	service.Handle(mux, reg, func(ctx context.Context) error { return broker.Ready(ctx, conn.JS) }, d.Ready)
	serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- service.Serve(serveCtx, log, ln, mux, 5*time.Second) }()

	code := 0
	if err := d.Run(ctx); err != nil {
		log.Error().Err(err).Msg("dispatcher failed")
		code = 1
	}
	stopServe()
	if err := <-served; err != nil {
		log.Error().Err(err).Msg("HTTP server")
		code = 1
	}
	return code
}
