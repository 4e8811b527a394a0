package reconcile

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/service"
)

// DefaultHTTPAddr is where cmd/reconciler serves /healthz, /readyz and
// /metrics.
const DefaultHTTPAddr = ":8028"

// Run runs a reconciler on conn with cfg's schedule and counters (the
// connection, keyer, log and metrics are filled in here), and serves
// health and metrics on cfg.HTTPAddr (none when empty), until ctx ends.
// Like every daemon's Run, it takes its configuration, the NATS
// connection, the log and the metrics registry.
func Run(ctx context.Context, cfg Config, conn *broker.Conn, log zerolog.Logger, reg *prometheus.Registry) error {
	if err := broker.Ready(ctx, conn.JS); err != nil {
		return err
	}
	keyer, err := broker.Keyer(ctx, conn.JS)
	if err != nil {
		return err
	}
	cfg.NC, cfg.JS, cfg.Keyer, cfg.Log, cfg.Metrics = conn.NC, conn.JS, keyer, log, reg
	r, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.HTTPAddr == "" {
		return r.Run(ctx)
	}
	ln, err := service.Listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	service.Handle(mux, reg, func(ctx context.Context) error { return broker.Ready(ctx, conn.JS) })
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- service.Serve(ctx, log, ln, mux, 5*time.Second)
		cancel()
	}()
	err = r.Run(ctx)
	cancel()
	if serr := <-served; err == nil && serr != nil && !errors.Is(serr, context.Canceled) {
		err = serr
	}
	return err
}
