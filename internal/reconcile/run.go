package reconcile

import (
	"context"
	"errors"

	"golang.org/x/sync/errgroup"

	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// Run checks estimated counts, sweeps and answers on-demand checks until
// ctx ends. It returns the first error that stops one of them.
func (r *Reconciler) Run(ctx context.Context) error {
	subs, err := subscriptions.Open(ctx, r.cfg.JS, r.cfg.Keyer)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.serve(ctx) })
	g.Go(func() error { return r.serveStatus(ctx) })
	if r.cfg.EstimatedDelay > 0 {
		g.Go(func() error { return r.watch(ctx) })
		g.Go(func() error { return r.checkDue(ctx) })
	}
	if r.cfg.SweepPeriod > 0 {
		g.Go(func() error { return r.sweep(ctx, subs) })
	}
	r.cfg.Log.Info().Int("counters", len(r.cfg.Counters)).Dur("estimated_delay", r.cfg.EstimatedDelay).
		Dur("sweep_period", r.cfg.SweepPeriod).Float64("rate", r.cfg.Rate).Msg("reconciler running")
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
