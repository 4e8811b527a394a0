package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"text/tabwriter"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

func reconcileCommand() command {
	return command{name: "reconcile", summary: "check badges against the mail system now and correct the wrong ones", run: runReconcile}
}

// reconcileConcurrency is how many check requests pushctl keeps in flight;
// the reconciler rate-limits each mail system anyway.
const reconcileConcurrency = 4

func runReconcile(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("reconcile", "pushctl reconcile (--user ADDRESS | --tenant DOMAIN) [flags]", `
Asks the running reconciler (cmd/reconciler, or pushctl standalone with a
counter configured) to read the true Inbox unread count of one user
(--user), or of every user of an organization with a device subscription
(--tenant alone), from the mail system (doveadm, IMAP, Graph or EWS), and
to correct each badge that differs: the truth goes to the MAIL stream as an
authoritative snapshot, and the dispatchers push it like any event.

Prints one line per user that was not right (and every user with -v), then
a summary. A user whose last event the dispatchers have not applied yet
(behind) or who got an event during the check (raced) is left to the
reconciler's own schedule: run again to retry. Exits 1 when a check failed.`)
	who := addUserFlags(fs, "the user's address, e.g. alice@fabrikam.com")
	verbose := fs.Bool("v", false, "print every user, also those whose badge was right")
	asJSON := fs.Bool("json", false, "print the results as JSON lines instead of a table")
	o := natsFlags(fs)
	tenant, user, err := c.parseUser(fs, args, who, false)
	if err != nil {
		return err
	}
	if tenant == "" {
		return fmt.Errorf("%w: give --user or --tenant", errUsage)
	}
	conn, keyer, err := connectOpen(ctx, o, broker.Keyer)
	if err != nil {
		return err
	}
	defer conn.Close()
	users := []reconcile.User{{Tenant: tenant, User: user}}
	if user == "" {
		subs, err := subscriptions.Open(ctx, conn.JS, keyer)
		if err != nil {
			return err
		}
		users = users[:0]
		if err := subs.Users(ctx, tenant, func(t, u string) error {
			users = append(users, reconcile.User{Tenant: t, User: u})
			return nil
		}); err != nil {
			return err
		}
		if len(users) == 0 {
			return fmt.Errorf("no user of %s has a device subscription", tenant)
		}
	}
	prog := newProgress(c.stderr, "reconciling")
	results, err := askAll(ctx, users, func(ctx context.Context, batch []reconcile.User) ([]reconcile.Result, error) {
		return reconcile.Ask(ctx, conn.NC, batch)
	}, prog.update)
	prog.finish("users checked")
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		for _, r := range results {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
	} else {
		printReconcile(c.stdout, results, *verbose)
	}
	for _, r := range results {
		if r.Outcome == reconcile.Failed {
			return errSilent
		}
	}
	return nil
}

// askAll asks for users in batches of reconcile.MaxBatch, a few batches at
// once, reporting progress; it returns the results in the users' order, or
// the first error.
func askAll(ctx context.Context, users []reconcile.User, ask func(context.Context, []reconcile.User) ([]reconcile.Result, error), progress func(done, total int)) ([]reconcile.Result, error) {
	results := make([]reconcile.Result, len(users))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		done     int
		firstErr error
		wg       sync.WaitGroup
	)
	slots := make(chan struct{}, reconcileConcurrency)
	progress(0, len(users))
	for start := 0; start < len(users); start += reconcile.MaxBatch {
		end := min(start+reconcile.MaxBatch, len(users))
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			got, err := ask(ctx, users[start:end])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				cancel()
				return
			}
			copy(results[start:end], got)
			done += end - start
			progress(done, len(users))
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return results, firstErr
}

// printReconcile prints the users whose badge was not right (all with
// verbose) and a summary by outcome.
func printReconcile(w io.Writer, results []reconcile.Result, verbose bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tUSER\tOUTCOME\tBADGE\tTRUTH\tCOUNTER\tNOTE")
	byOutcome := map[reconcile.Outcome]int{}
	for _, r := range results {
		byOutcome[r.Outcome]++
		if r.Outcome == reconcile.Match && !verbose {
			continue
		}
		badge := fmt.Sprint(r.Badge)
		if !r.Exact {
			badge += " (estimated)"
		}
		truth := fmt.Sprint(r.Truth)
		if r.Counter == "" {
			truth = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Tenant, r.User.User, r.Outcome, badge, truth, r.Counter, r.Error)
	}
	_ = tw.Flush()
	outcomes := make([]string, 0, len(byOutcome))
	for o := range byOutcome {
		outcomes = append(outcomes, string(o))
	}
	sort.Strings(outcomes)
	fmt.Fprint(w, "summary:")
	for i, o := range outcomes {
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(w, "%s %d %s", sep, byOutcome[reconcile.Outcome(o)], o)
	}
	fmt.Fprintln(w)
}
