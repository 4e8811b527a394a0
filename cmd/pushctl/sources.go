package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/pushproxy/pushproxy/internal/sourcestatus"
)

func sourcesCommand() command {
	return group("sources", "what keeps the mail sources reporting: managed subscriptions, reconciliation",
		command{name: "status", summary: "managed Graph and EWS subscriptions per tenant, and what the reconciler checked and corrected", run: runSourcesStatus},
	)
}

func runSourcesStatus(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("sources status", "pushctl sources status [flags]", `
Shows what keeps the sources reporting and the badges right:
  - per source and tenant, the events the running ingests stored since
    they started and the last one's time (every ingest answers over NATS;
    duplicates are not counted);
  - the IMAP watcher's users per tenant, watched and connected;
  - which ingest runs the Graph and the EWS subscription manager (one at a
    time holds each one's lease; the others stand by);
  - the Graph subscriptions ingest keeps (--graph-notification-url), per
    tenant, with the earliest expiry: renewals keep it days ahead;
  - the EWS push subscriptions ingest keeps (--ews-notification-url), per
    tenant, with the longest time a subscription has been silent: more than
    twice the status frequency and ingest makes it again;
  - the running reconciler: the mail systems it reads, users waiting for a
    check, the last sweep, and per tenant the users checked, the badges
    found wrong (drift) and the failed checks since it started.
The monitor serves the same as a page at /status/sources on its address
(pushctl standalone: on ingest's). The figures are metrics too: pushproxy_ingest_source_last_event_timestamp_seconds,
pushproxy_imap_watched_users and _connected_users, pushproxy_lease_held,
pushproxy_graph_subscription_next_expiry_timestamp_seconds,
pushproxy_ews_subscription_last_notification_age_seconds and
pushproxy_reconcile_drift_total.`)
	asJSON := fs.Bool("json", false, "print JSON")
	wait := fs.Duration("wait", time.Second, "how long to wait for the ingests' answers (every ingest answers; there is no count to wait for)")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	conn, err := connect(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	rep, err := sourcestatus.Collect(ctx, conn.NC, conn.JS, *wait)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(c.stdout).Encode(rep)
	}
	rep.WriteText(c.stdout, time.Now())
	return nil
}
