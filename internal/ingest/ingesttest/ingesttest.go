// Package ingesttest runs ingest for the tests of other packages, as
// brokertest runs NATS: on a free loopback port, logging to the test, until
// the test ends.
package ingesttest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/service"
)

// Start runs ingest.Run with cfg, its Addr a free loopback address, and
// exts on conn until the test ends, and returns the address once ingest
// is ready (/readyz answers 200, within 30 s). Its metrics go to reg (a
// registry of its own when nil), its logs at info level to the test.
func Start(tb testing.TB, conn *broker.Conn, cfg ingest.Config, reg *prometheus.Registry, exts ...ingest.Extension) string {
	tb.Helper()
	cfg.Addr = nettest.FreeAddr(tb)
	if reg == nil {
		reg = service.NewRegistry()
	}
	log := zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ingest.Run(ctx, cfg, conn, log, reg, exts...) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("ingest: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !ready(cfg.Addr) {
		select {
		case err := <-done:
			done <- err // for the cleanup
			tb.Fatalf("ingest stopped before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatal("ingest was not ready within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cfg.Addr
}

// ready reports whether ingest at addr answers /readyz with 200.
func ready(addr string) bool {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
