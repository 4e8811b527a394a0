// Command monitor watches a pushproxy deployment: it runs the connectivity
// probe and the end-to-end canary on a schedule, checks certificate expiry,
// and alerts on dead letters, abandoned events and pruned subscriptions.
// It is a thin main over internal/monitor.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/flagenv"
	"github.com/pushproxy/pushproxy/internal/monitor"
	"github.com/pushproxy/pushproxy/internal/service"
)

const description = `Watches a pushproxy deployment and says when pushes do not flow.

  - Connectivity probe (every --probe-interval): gets an S2S token and sends
    the monitoring notification to the relay, like pushctl probe. Results go
    to stream PROBES (subject probe.connectivity) and to metrics.
  - End-to-end canary (every --canary-interval, when --ingest-url is set): a
    new-mail event for a canary user (canary@<organization>) goes in through
    ingest and must come out as a push record in PUSH_SENT within
    --canary-timeout. Its device uses app --canary-app-id, which the relay
    must serve with its log provider:
      pushctl relay app add --app-id pushproxy-canary --provider log
    Results go to PROBES (probe.canary) and to metrics.
  - Certificates: alerts when the current or next S2S certificate expires
    within 30 days.
  - Watches: new dead letters (PUSH_DEAD), MAX_DELIVERIES and MSG_TERMINATED
    advisories (ADVISORIES), and device subscriptions pruned by pushes.

Alerts (one per incident, and a resolved notice when it ends) go to the log,
to NATS subjects monitor.alerts.<severity>, and to the Alertmanager at
--alertmanager-url. Serves /healthz, /readyz and /metrics on --http-addr.`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsOpts := broker.ConnectFlags(fs, "pushproxy-monitor", false)
	cfg := monitor.Flags(fs)
	fs.StringVar(&cfg.HTTPAddr, "http-addr", monitor.DefaultHTTPAddr, "host:port of the HTTP server for /healthz, /readyz and /metrics")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	flagenv.SetUsage(fs, "monitor [flags]", description)
	if err := flagenv.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "monitor:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "monitor: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	log, err := service.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "monitor:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	conn, err := broker.Connect(ctx, *natsOpts)
	if err != nil {
		log.Error().Err(err).Msg("connecting to NATS")
		return 1
	}
	defer conn.Close()
	if err := monitor.Run(ctx, *cfg, conn, log, service.NewRegistry()); err != nil {
		log.Error().Err(err).Msg("monitor stopped")
		return 1
	}
	log.Info().Msg("monitor stopped")
	return 0
}
