package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/logtest"
)

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, func(string) string { return "" }, &out); code != 0 {
		t.Fatalf("--help exit code %d", code)
	}
	for _, want := range []string{"--window", "PUSHPROXY_WINDOW", "--ack-wait", "--pinned-ttl", "--http-addr", "--breaker-hold", "/metrics"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}

func TestBadFlags(t *testing.T) {
	tests := [][]string{
		{"--no-such-flag"},
		{"extra-argument"},
	}
	for _, args := range tests {
		var out bytes.Buffer
		if code := run(context.Background(), args, func(string) string { return "" }, &out); code != 2 {
			t.Errorf("%v: exit code %d, want 2", args, code)
		}
	}
	var out bytes.Buffer
	env := map[string]string{"PUSHPROXY_WINDOW": "soon"}
	if code := run(context.Background(), nil, func(k string) string { return env[k] }, &out); code != 2 || !strings.Contains(out.String(), "PUSHPROXY_WINDOW") {
		t.Errorf("bad environment value: exit code %d, output %q", code, out.String())
	}
}

func TestRunsEmbeddedAndStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out logtest.Buffer
	go func() {
		done <- run(ctx, []string{"--nats-embedded", "--data-dir", t.TempDir(), "--provision", "--http-addr", addr,
			"--heartbeat", "100ms", "--log-format", "json"}, func(string) string { return "" }, &out)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("not ready within 30s; output:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(res.Body)
	res.Body.Close()
	if !strings.Contains(body.String(), "pushproxy_dispatcher_proxy_disabled 1") {
		t.Errorf("metrics do not say the proxy is disabled:\n%s", body.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d; output:\n%s", code, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop within 30s")
	}
}
