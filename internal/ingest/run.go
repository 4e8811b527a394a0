package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/service"
)

// Extension adds routes to a server before it starts serving, e.g. the
// subscriptions API or another source. It may capture what it needs (the
// NATS connection, a logger) in its closure.
type Extension func(s *Server) error

// Run serves ingest on cfg.Addr over conn until ctx ends, then drains the
// requests in flight for up to cfg.DrainTimeout. The layout must be
// provisioned (the subject key is read from the config bucket). Metrics go
// to reg. cmd/ingest and pushctl standalone both call it.
func Run(ctx context.Context, cfg Config, conn *broker.Conn, log zerolog.Logger, reg *prometheus.Registry, exts ...Extension) error {
	keyer, err := broker.Keyer(ctx, conn.JS)
	if err != nil {
		return fmt.Errorf("reading the subject key (is the layout provisioned? start with --provision): %w", err)
	}
	pub, err := NewPublisher(conn.NC, keyer, cfg.PublishTimeout)
	if err != nil {
		return err
	}
	creds, err := credentials.Open(ctx, conn.JS)
	if err != nil {
		return err
	}
	index, err := creds.Watch(ctx, log)
	if err != nil {
		return err
	}
	if len(cfg.NativeTokens) > 0 || cfg.NativeTokenFile != "" {
		log.Warn().Msg("--native-token and --native-token-file give admin access to every tenant; create scoped credentials with pushctl credentials create (configured tokens go away in the next release)")
	}
	srv, err := New(cfg, Deps{
		Publisher:   pub,
		Log:         log,
		Registry:    reg,
		Credentials: index,
		Ready: []service.ReadyFunc{
			Connected(conn.NC),
			func(ctx context.Context) error { return broker.Ready(ctx, conn.JS) },
			index.Check,
		},
	})
	if err != nil {
		return err
	}
	for _, ext := range exts {
		if err := ext(srv); err != nil {
			return fmt.Errorf("adding ingest routes: %w", err)
		}
	}
	srv.Go(func(ctx context.Context) error { return srv.serveStatus(ctx, conn.NC) })
	ln, err := service.Listen(cfg.Addr)
	if err != nil {
		return err
	}
	log.Info().Interface("sources", srv.Enabled()).Msg("ingest accepting events")
	if files := cfg.secretFiles(); len(files) > 0 {
		interval := cfg.ReloadInterval
		if interval == 0 {
			interval = DefaultConfig().ReloadInterval
		}
		go watchFiles(ctx, files, interval, func() {
			if err := srv.ReloadSecrets(); err != nil {
				log.Warn().Err(err).Msg("keeping the credentials read before")
			}
		})
	}
	return serveWith(ctx, srv.background, func(ctx context.Context) error {
		return service.Serve(ctx, log, ln, srv, cfg.DrainTimeout)
	})
}

// serveWith runs serve and the background tasks until ctx ends or one of
// them fails; the first error stops the others and is returned.
func serveWith(ctx context.Context, background []func(context.Context) error, serve func(context.Context) error) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, task := range append(background, serve) {
		g.Go(func() error {
			err := task(ctx)
			if errors.Is(err, context.Canceled) {
				err = nil
			}
			if err == nil {
				// A task that ends stops ingest, as serve does.
				err = errStopped
			}
			return err
		})
	}
	if err := g.Wait(); err != nil && !errors.Is(err, errStopped) {
		return err
	}
	return nil
}

// errStopped ends serveWith's group when a task returns without an error.
var errStopped = errors.New("stopped")

// Connected is a readiness check that nc is connected.
func Connected(nc *nats.Conn) service.ReadyFunc {
	return func(context.Context) error {
		if status := nc.Status(); status != nats.CONNECTED {
			return fmt.Errorf("NATS connection is %s", status)
		}
		return nil
	}
}

// watchFiles calls changed when one of files is modified (its size or
// modification time differ from the last look), looking every interval
// until ctx ends. Files that cannot be looked at count as unchanged.
func watchFiles(ctx context.Context, files []string, interval time.Duration, changed func()) {
	stamp := func() []string {
		out := make([]string, len(files))
		for i, f := range files {
			if st, err := os.Stat(f); err == nil {
				out[i] = fmt.Sprintf("%d/%d", st.Size(), st.ModTime().UnixNano())
			}
		}
		return out
	}
	last := stamp()
	service.Every(ctx, interval, func() {
		if now := stamp(); !slices.Equal(now, last) {
			last = now
			changed()
		}
	})
}
