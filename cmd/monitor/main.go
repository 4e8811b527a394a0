// Command monitor watches a pushproxy deployment: it runs the connectivity
// probe and the end-to-end canary on a schedule, checks certificate expiry,
// and alerts on dead letters, abandoned events and pruned subscriptions.
// It is a thin main over internal/monitor.
package main

import (
	"context"
	"io"
	"os"

	"github.com/pushproxy/pushproxy/internal/daemon"
	"github.com/pushproxy/pushproxy/internal/monitor"
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
	cmd := daemon.New("monitor", "monitor [flags]", description, stderr, daemon.Options{})
	cfg := monitor.Flags(cmd.Flags)
	cmd.Flags.StringVar(&cfg.HTTPAddr, "http-addr", monitor.DefaultHTTPAddr, "host:port of the HTTP server for /healthz, /readyz and /metrics")
	return cmd.Main(context.Background(), args, getenv, func(ctx context.Context, env daemon.Env) error {
		return monitor.Run(ctx, *cfg, env.Conn, env.Log, env.Registry)
	})
}
