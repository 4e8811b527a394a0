// Command reconciler heals badges: it reads users' true Inbox unread counts
// from their mail system (Dovecot's doveadm API, any IMAP server, Microsoft
// Graph, Exchange EWS) and corrects the badges that drifted. It is a thin
// main over internal/reconcile.
package main

import (
	"context"
	"io"
	"os"

	"github.com/pushproxy/pushproxy/internal/daemon"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/reconcile/counters"
)

const description = `Checks badges against the mail system and corrects the ones that drifted.

A badge drifts when the mail server's events do not tell the whole story: a
Graph webhook that never came, Dovecot's OX driver (which never reports
reads), a mailbox restored from backup. The reconciler asks the mail system
for the true unread count of the Inbox and, when it differs from the count
the dispatchers keep, publishes it to the MAIL stream as an authoritative
snapshot; the dispatchers push it like any event. A snapshot never
overwrites a newer count: JetStream refuses it when an event of the user
arrived during the check.

It checks:
  - users whose last event carried no count (an estimate), within
    --reconcile-estimated-delay of that event;
  - every user with a device subscription, once per --reconcile-sweep-period,
    spread evenly;
  - users asked for with pushctl reconcile --user/--tenant.

Mail systems ("counters"), tried in this order for each user; configure at
least one:
  doveadm  Dovecot's doveadm HTTP API (--doveadm-url)
  imap     any IMAP server, STATUS INBOX (UNSEEN) as a master user or with
           per-user passwords (--imap-addr)
  graph    Microsoft Graph unreadItemCount, app-only (--graph-app-tenant-id)
  ews      Exchange EWS GetFolder (--ews-url)

Metrics: pushproxy_reconcile_checks_total, pushproxy_reconcile_drift_total
(badges found wrong). Serves /healthz, /readyz and /metrics on --http-addr.`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cmd := daemon.New("reconciler", "reconciler [flags]", description, stderr, daemon.Options{})
	cfg := reconcile.Flags(cmd.Flags)
	cmd.Flags.StringVar(&cfg.Mailbox, "mailbox", "INBOX", "mailbox whose unread messages the badge counts (the dispatchers' --mailbox)")
	cmd.Flags.StringVar(&cfg.HTTPAddr, "http-addr", reconcile.DefaultHTTPAddr, "host:port of the HTTP server for /healthz, /readyz and /metrics")
	cs := counters.Flags(cmd.Flags, counters.Shared{})
	return cmd.Main(context.Background(), args, getenv, func(ctx context.Context, env daemon.Env) error {
		list, err := cs.Build(env.Log, env.Registry)
		if err != nil {
			return err
		}
		cfg.Counters = list
		return reconcile.Run(ctx, *cfg, env.Conn, env.Log, env.Registry)
	})
}
