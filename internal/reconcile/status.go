package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
)

// SubjectStatus is where a running reconciler answers what it has done
// (pushctl sources status): a Status.
const SubjectStatus = "pushproxy.reconcile.status"

// Status is what a reconciler has done since it started.
type Status struct {
	// Counters are the mail systems it reads, in the order tried.
	Counters []string `json:"counters"`
	// Queued is how many users wait for an estimated or follow-up check.
	Queued int `json:"queued"`
	// SweepUsers is the number of users of the current sweep,
	// LastSweep when the last one ended (zero: none yet).
	SweepUsers int       `json:"sweep_users"`
	LastSweep  time.Time `json:"last_sweep,omitzero"`
	// Tenants are the checks per tenant, by tenant.
	Tenants []TenantStatus `json:"tenants"`
}

// TenantStatus is the reconciliation of one tenant.
type TenantStatus struct {
	Tenant string `json:"tenant"`
	// Checks counts the users checked, Drift those whose badge was wrong.
	Checks int `json:"checks"`
	Drift  int `json:"drift"`
	// Errors counts the checks that failed.
	Errors    int       `json:"errors"`
	LastCheck time.Time `json:"last_check"`
	// LastDrift is when a wrong badge was last corrected.
	LastDrift time.Time `json:"last_drift,omitzero"`
}

// tally records a result of tenant at now.
func (r *Reconciler) tally(res Result, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.tenants[res.Tenant]
	if ts == nil {
		ts = &TenantStatus{Tenant: res.Tenant}
		r.tenants[res.Tenant] = ts
	}
	ts.Checks++
	ts.LastCheck = now
	switch res.Outcome {
	case Corrected:
		ts.Drift++
		ts.LastDrift = now
	case Failed:
		ts.Errors++
	}
}

// Status returns what the reconciler has done so far.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{Queued: r.queue.len(), SweepUsers: r.sweepUsers, LastSweep: r.lastSweep, Tenants: []TenantStatus{}}
	for _, c := range r.cfg.Counters {
		st.Counters = append(st.Counters, c.Name())
	}
	for _, ts := range r.tenants {
		st.Tenants = append(st.Tenants, *ts)
	}
	sort.Slice(st.Tenants, func(i, j int) bool { return st.Tenants[i].Tenant < st.Tenants[j].Tenant })
	return st
}

// serveStatus answers status requests until ctx ends.
func (r *Reconciler) serveStatus(ctx context.Context) error {
	sub, err := r.cfg.NC.Subscribe(SubjectStatus, func(msg *nats.Msg) {
		data, err := json.Marshal(r.Status())
		if err != nil {
			return
		}
		_ = msg.Respond(data)
	})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", SubjectStatus, err)
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

// AskStatus returns the status of a running reconciler, or
// ErrNoReconciler.
func AskStatus(ctx context.Context, nc *nats.Conn) (Status, error) {
	msg, err := nc.RequestWithContext(ctx, SubjectStatus, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return Status{}, ErrNoReconciler
	}
	if err != nil {
		return Status{}, fmt.Errorf("asking the reconciler for its status: %w", err)
	}
	var st Status
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		return Status{}, fmt.Errorf("decoding the reconciler's status: %w", err)
	}
	return st, nil
}
