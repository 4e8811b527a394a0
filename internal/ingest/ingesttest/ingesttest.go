// Package ingesttest runs ingest for the tests of other packages, as
// brokertest runs NATS, until the test ends: the whole service on a free
// loopback port, logging to the test (Start), or its server alone, with
// the handlers a test mounts, on a test server (Serve).
package ingesttest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
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

// Serve builds an ingest server with cfg over conn, its Publisher on conn
// (acknowledgements awaited up to 10 s) and its Log none (deps' other
// fields as given), lets mount add handlers to it (a source's, as the
// lead wires it; nil: none), and serves it on a test server until the
// test ends. It returns the test server's URL.
func Serve(tb testing.TB, conn *broker.Conn, cfg ingest.Config, deps ingest.Deps, mount func(*ingest.Server)) string {
	tb.Helper()
	pub, err := ingest.NewPublisher(conn.NC, brokertest.Keyer(tb, conn), 10*time.Second)
	if err != nil {
		tb.Fatalf("making ingest's publisher: %v", err)
	}
	deps.Publisher, deps.Log = pub, zerolog.Nop()
	srv, err := ingest.New(cfg, deps)
	if err != nil {
		tb.Fatalf("making the ingest server: %v", err)
	}
	if mount != nil {
		mount(srv)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(hs.Close)
	return hs.URL
}

// Post sends body to ingest's url as JSON with the bearer token, as a
// native client does, and returns the HTTP status of the answer.
func Post(tb testing.TB, url, token, body string) int {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatalf("making a request to ingest: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("posting to ingest: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
