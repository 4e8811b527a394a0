// Package sourcestatus reads what keeps the mail sources reporting and
// the badges right, across the processes of a deployment: the events each
// ingest stored per source and tenant, the IMAP watcher's users, who runs
// the Graph and EWS subscription managers, the subscriptions they keep,
// and what the reconciler checked and corrected. pushctl sources status
// prints it; the monitor serves it as a page.
package sourcestatus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/sources/imap"
)

// Report is what keeps the sources reporting and the badges right, as
// pushctl sources status and the monitor's status page show it.
type Report struct {
	// Ingests is how many ingests answered; Activity merges what they
	// stored per source and tenant, IMAP their watchers' users.
	Ingests  int                 `json:"ingests"`
	Activity []Activity          `json:"activity"`
	IMAP     []imap.TenantStatus `json:"imap_watcher,omitempty"`
	// Managers are the subscription managers' leases: who runs each.
	Managers      []ManagerLease        `json:"managers"`
	Subscriptions []SubscriptionSummary `json:"subscriptions"`
	// Reconciler is nil when no reconciler answered.
	Reconciler *reconcile.Status `json:"reconciler,omitempty"`
}

// Activity is the events of one source and tenant that the
// ingests stored since they started.
type Activity struct {
	Source    string    `json:"source"`
	Tenant    string    `json:"tenant"`
	Events    uint64    `json:"events"`
	LastEvent time.Time `json:"last_event"`
}

// ManagerLease is who runs a subscription manager.
type ManagerLease struct {
	Lease  string    `json:"lease"`
	Holder string    `json:"holder,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// SubscriptionSummary is one source's managed subscriptions of one tenant.
type SubscriptionSummary struct {
	Source string `json:"source"`
	Tenant string `json:"tenant"`
	Count  int    `json:"subscriptions"`
	// NextExpiry is the earliest expiry (Graph).
	NextExpiry time.Time `json:"next_expiry,omitzero"`
	// OldestHeard is the longest-silent subscription's last notification
	// or subscription time (EWS).
	OldestHeard time.Time `json:"oldest_heard,omitzero"`
}

// Collect reads the report: it asks every ingest for its status (the
// answers that come within wait), reads the managers' leases and the
// managed subscriptions from their buckets, and asks the reconciler for
// its status. A reconciler that does not answer leaves Reconciler nil.
func Collect(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, wait time.Duration) (Report, error) {
	rep := Report{Subscriptions: []SubscriptionSummary{}, Activity: []Activity{}}
	if err := rep.addIngests(ctx, nc, wait); err != nil {
		return rep, err
	}
	if err := rep.addLeases(ctx, js); err != nil {
		return rep, err
	}
	if err := rep.addGraph(ctx, js); err != nil {
		return rep, err
	}
	if err := rep.addEWS(ctx, js); err != nil {
		return rep, err
	}
	sort.Slice(rep.Subscriptions, func(i, j int) bool {
		a, b := rep.Subscriptions[i], rep.Subscriptions[j]
		return a.Source < b.Source || (a.Source == b.Source && a.Tenant < b.Tenant)
	})
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := reconcile.AskStatus(rctx, nc)
	switch {
	case err == nil:
		rep.Reconciler = &st
	case !errors.Is(err, reconcile.ErrNoReconciler):
		return rep, err
	}
	return rep, nil
}

// summary returns the summary of source and tenant in rep, adding it.
func (rep *Report) summary(source, tenant string) *SubscriptionSummary {
	for i := range rep.Subscriptions {
		if s := &rep.Subscriptions[i]; s.Source == source && s.Tenant == tenant {
			return s
		}
	}
	rep.Subscriptions = append(rep.Subscriptions, SubscriptionSummary{Source: source, Tenant: tenant})
	return &rep.Subscriptions[len(rep.Subscriptions)-1]
}

// addIngests gathers the ingests' statuses for wait and merges
// them into rep.
func (rep *Report) addIngests(ctx context.Context, nc *nats.Conn, wait time.Duration) error {
	statuses, err := ingest.GatherStatus(ctx, nc, wait)
	if err != nil {
		return err
	}
	rep.Ingests = len(statuses)
	type key struct{ source, tenant string }
	activity := map[key]*Activity{}
	watchers := map[string]*imap.TenantStatus{}
	for _, st := range statuses {
		for _, a := range st.Sources {
			k := key{string(a.Source), a.Tenant}
			m := activity[k]
			if m == nil {
				m = &Activity{Source: k.source, Tenant: k.tenant}
				activity[k] = m
			}
			m.Events += a.Events
			if a.LastEvent.After(m.LastEvent) {
				m.LastEvent = a.LastEvent
			}
		}
		for _, w := range st.IMAP {
			m := watchers[w.Tenant]
			if m == nil {
				m = &imap.TenantStatus{Tenant: w.Tenant}
				watchers[w.Tenant] = m
			}
			m.Watched += w.Watched
			m.Connected += w.Connected
		}
	}
	for _, a := range activity {
		rep.Activity = append(rep.Activity, *a)
	}
	sort.Slice(rep.Activity, func(i, j int) bool {
		a, b := rep.Activity[i], rep.Activity[j]
		return a.Source < b.Source || (a.Source == b.Source && a.Tenant < b.Tenant)
	})
	for _, w := range watchers {
		rep.IMAP = append(rep.IMAP, *w)
	}
	sort.Slice(rep.IMAP, func(i, j int) bool { return rep.IMAP[i].Tenant < rep.IMAP[j].Tenant })
	return nil
}

// addLeases reads who holds the subscription managers' leases.
func (rep *Report) addLeases(ctx context.Context, js jetstream.JetStream) error {
	managers, err := Managers(ctx, js)
	rep.Managers = managers
	return err
}

// Managers reads who runs the Graph and the EWS subscription manager:
// the holders of their leases (Holder empty: nobody).
func Managers(ctx context.Context, js jetstream.JetStream) ([]ManagerLease, error) {
	var out []ManagerLease
	for _, name := range []string{ingest.LeaseGraphSubscriptions, ingest.LeaseEWSSubscriptions} {
		h, ok, err := broker.ReadLease(ctx, js, name)
		if err != nil {
			return nil, err
		}
		l := ManagerLease{Lease: name}
		if ok {
			l.Holder, l.Since = h.ID, h.Since
		}
		out = append(out, l)
	}
	return out, nil
}

// addGraph summarizes the Graph subscriptions the manager keeps.
func (rep *Report) addGraph(ctx context.Context, js jetstream.JetStream) error {
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

// addEWS summarizes the EWS subscriptions the manager keeps.
func (rep *Report) addEWS(ctx context.Context, js jetstream.JetStream) error {
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

// printIngests writes the events per source and tenant and the IMAP
// watcher's users.
func (rep *Report) printIngests(w io.Writer, now time.Time) {
	fmt.Fprintf(w, "Events stored since the ingests started (%d ingests answered)\n", rep.Ingests)
	if len(rep.Activity) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SOURCE\tTENANT\tEVENTS\tLAST EVENT")
		for _, a := range rep.Activity {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s (%s ago)\n", a.Source, a.Tenant, a.Events, a.LastEvent.UTC().Format(time.RFC3339), now.Sub(a.LastEvent).Round(time.Second))
		}
		_ = tw.Flush()
	}
	if len(rep.IMAP) > 0 {
		fmt.Fprintln(w, "IMAP watcher")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TENANT\tWATCHED\tCONNECTED")
		for _, t := range rep.IMAP {
			fmt.Fprintf(tw, "  %s\t%d\t%d\n", t.Tenant, t.Watched, t.Connected)
		}
		_ = tw.Flush()
	}
	fmt.Fprintln(w)
}

// WriteText writes the report as tables, ages counted to now.
func (rep *Report) WriteText(w io.Writer, now time.Time) {
	rep.printIngests(w, now)
	fmt.Fprintln(w, "Managed subscriptions")
	for _, l := range rep.Managers {
		if l.Holder == "" {
			fmt.Fprintf(w, "  %s manager: not running\n", l.Lease)
		} else {
			fmt.Fprintf(w, "  %s manager: run by %s since %s\n", l.Lease, l.Holder, l.Since.UTC().Format(time.RFC3339))
		}
	}
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
