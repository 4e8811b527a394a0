package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
)

func sourcesCommand() command {
	return group("sources", "what keeps the mail sources reporting: managed subscriptions, reconciliation",
		command{name: "status", summary: "managed Graph and EWS subscriptions per tenant, and what the reconciler checked and corrected", run: runSourcesStatus},
	)
}

// sourcesReport is what pushctl sources status shows.
type sourcesReport struct {
	Subscriptions []subscriptionSummary `json:"subscriptions"`
	// Reconciler is nil when no reconciler answered.
	Reconciler *reconcile.Status `json:"reconciler,omitempty"`
}

// subscriptionSummary is one source's managed subscriptions of one tenant.
type subscriptionSummary struct {
	Source string `json:"source"`
	Tenant string `json:"tenant"`
	Count  int    `json:"subscriptions"`
	// NextExpiry is the earliest expiry (Graph).
	NextExpiry time.Time `json:"next_expiry,omitzero"`
	// OldestHeard is the longest-silent subscription's last notification
	// or subscription time (EWS).
	OldestHeard time.Time `json:"oldest_heard,omitzero"`
}

func runSourcesStatus(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("sources status", "pushctl sources status [flags]", `
Shows what keeps the sources reporting and the badges right:
  - the Graph subscriptions ingest keeps (--graph-notification-url), per
    tenant, with the earliest expiry: renewals keep it days ahead;
  - the EWS push subscriptions ingest keeps (--ews-notification-url), per
    tenant, with the longest time a subscription has been silent: more than
    twice the status frequency and ingest makes it again;
  - the running reconciler: the mail systems it reads, users waiting for a
    check, the last sweep, and per tenant the users checked, the badges
    found wrong (drift) and the failed checks since it started.
The IMAP watcher's connections are in ingest's metrics
(pushproxy_imap_watched_users, pushproxy_imap_connected_users).`)
	asJSON := fs.Bool("json", false, "print JSON")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	conn, err := connect(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	rep := sourcesReport{Subscriptions: []subscriptionSummary{}}
	if err := summarizeGraph(ctx, conn.JS, &rep); err != nil {
		return err
	}
	if err := summarizeEWS(ctx, conn.JS, &rep); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := reconcile.AskStatus(rctx, conn.NC)
	switch {
	case err == nil:
		rep.Reconciler = &st
	case !errors.Is(err, reconcile.ErrNoReconciler):
		return err
	}
	if *asJSON {
		return json.NewEncoder(c.stdout).Encode(rep)
	}
	rep.print(c.stdout, time.Now())
	return nil
}

// summary returns the summary of source and tenant in rep, adding it.
func (rep *sourcesReport) summary(source, tenant string) *subscriptionSummary {
	for i := range rep.Subscriptions {
		if s := &rep.Subscriptions[i]; s.Source == source && s.Tenant == tenant {
			return s
		}
	}
	rep.Subscriptions = append(rep.Subscriptions, subscriptionSummary{Source: source, Tenant: tenant})
	return &rep.Subscriptions[len(rep.Subscriptions)-1]
}

func summarizeGraph(ctx context.Context, js jetstream.JetStream, rep *sourcesReport) error {
	kv, err := js.KeyValue(ctx, broker.BucketGraphSubscriptions)
	if err != nil {
		return fmt.Errorf("opening bucket %s (provision the layout again): %w", broker.BucketGraphSubscriptions, err)
	}
	subs, err := graph.NewKVSubscriptionStore(kv).List(ctx)
	if err != nil {
		return err
	}
	for _, st := range subs {
		s := rep.summary("graph", st.Tenant)
		s.Count++
		if s.NextExpiry.IsZero() || st.Expires.Before(s.NextExpiry) {
			s.NextExpiry = st.Expires
		}
	}
	return nil
}

func summarizeEWS(ctx context.Context, js jetstream.JetStream, rep *sourcesReport) error {
	kv, err := js.KeyValue(ctx, broker.BucketEWSSubscriptions)
	if err != nil {
		return fmt.Errorf("opening bucket %s (provision the layout again): %w", broker.BucketEWSSubscriptions, err)
	}
	subs, err := ews.NewKVSubscriptionStore(kv).List(ctx)
	if err != nil {
		return err
	}
	for _, st := range subs {
		s := rep.summary("ews", st.Tenant)
		s.Count++
		heard := st.Subscribed
		if st.LastNotification.After(heard) {
			heard = st.LastNotification
		}
		if s.OldestHeard.IsZero() || heard.Before(s.OldestHeard) {
			s.OldestHeard = heard
		}
	}
	return nil
}

// print writes the report as tables.
func (rep *sourcesReport) print(w io.Writer, now time.Time) {
	sort.Slice(rep.Subscriptions, func(i, j int) bool {
		a, b := rep.Subscriptions[i], rep.Subscriptions[j]
		return a.Source < b.Source || (a.Source == b.Source && a.Tenant < b.Tenant)
	})
	fmt.Fprintln(w, "Managed subscriptions")
	if len(rep.Subscriptions) == 0 {
		fmt.Fprintln(w, "  none (ingest keeps them with --graph-notification-url or --ews-notification-url)")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SOURCE\tTENANT\tSUBSCRIPTIONS\tNEXT EXPIRY\tLONGEST SILENT")
		for _, s := range rep.Subscriptions {
			expiry, silent := "-", "-"
			if !s.NextExpiry.IsZero() {
				expiry = s.NextExpiry.UTC().Format(time.RFC3339) + " (in " + s.NextExpiry.Sub(now).Round(time.Minute).String() + ")"
			}
			if !s.OldestHeard.IsZero() {
				silent = now.Sub(s.OldestHeard).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", s.Source, s.Tenant, s.Count, expiry, silent)
		}
		_ = tw.Flush()
	}
	fmt.Fprintln(w)
	r := rep.Reconciler
	if r == nil {
		fmt.Fprintln(w, "Reconciler: not running (cmd/reconciler, or pushctl standalone with a counter such as --doveadm-url)")
		return
	}
	last := "none yet"
	if !r.LastSweep.IsZero() {
		last = r.LastSweep.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "Reconciler: reads %v; %d users queued; last sweep %s (%d users)\n", r.Counters, r.Queued, last, r.SweepUsers)
	if len(r.Tenants) == 0 {
		fmt.Fprintln(w, "  no user checked yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TENANT\tCHECKED\tDRIFT\tERRORS\tLAST CHECK\tLAST DRIFT")
	for _, t := range r.Tenants {
		lastDrift := "-"
		if !t.LastDrift.IsZero() {
			lastDrift = t.LastDrift.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\t%s\n", t.Tenant, t.Checks, t.Drift, t.Errors, t.LastCheck.UTC().Format(time.RFC3339), lastDrift)
	}
	_ = tw.Flush()
}
