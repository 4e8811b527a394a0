package reconcile

import (
	"context"
	"time"

	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// sweep checks every user with a subscription once per SweepPeriod,
// spread evenly over it.
func (r *Reconciler) sweep(ctx context.Context, subs *subscriptions.Store) error {
	for ctx.Err() == nil {
		start := r.cfg.Now()
		var users []User
		err := subs.Users(ctx, "", func(tenant, user string) error {
			users = append(users, User{Tenant: tenant, User: user})
			return nil
		})
		if err != nil {
			r.cfg.Log.Warn().Err(err).Msg("reconciliation sweep: listing users")
			if service.Sleep(ctx, time.Minute) != nil {
				return nil
			}
			continue
		}
		r.m.sweepUser.Set(float64(len(users)))
		r.mu.Lock()
		r.sweepUsers = len(users)
		r.mu.Unlock()
		pace := r.cfg.SweepPeriod / time.Duration(max(len(users), 1))
		for len(users) > 0 {
			n := min(len(users), MaxBatch)
			if service.Sleep(ctx, pace*time.Duration(n)) != nil {
				return nil
			}
			r.Check(ctx, TriggerSweep, users[:n])
			users = users[n:]
		}
		done := r.cfg.Now()
		r.m.sweepDone.Set(float64(done.Unix()))
		r.mu.Lock()
		r.lastSweep = done
		r.mu.Unlock()
		if rest := r.cfg.SweepPeriod - r.cfg.Now().Sub(start); rest > 0 && service.Sleep(ctx, rest) != nil {
			return nil
		}
	}
	return nil
}
