package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/relay"
)

// TestRawChainPushesEveryEvent runs the raw chain on a real JetStream
// server and the bench's provider, its stages in one chain on an embedded
// server as the bench runs it, and one chain per stage on a server they
// share as test/chaos runs them: every stored event, one per request or
// in a batch, reaches its user's device as a badge, and a request it
// cannot read is refused with a JSON error and stores nothing.
func TestRawChainPushesEveryEvent(t *testing.T) {
	for _, layout := range []struct {
		name   string
		stages func(t *testing.T, dir string, prov *provider) string
	}{
		{"one chain", func(t *testing.T, dir string, prov *provider) string {
			return startRawStage(t, "-data-dir", dir+"/data", "-provider", prov.url(), "-provider-ca-file", prov.caFile)
		}},
		{"a chain per stage", func(t *testing.T, _ string, prov *provider) string {
			url := brokertest.Start(t, brokertest.WithListen()).ClientURL()
			relayAddr := startRawStage(t, "-nats-url", url, "-parts", partRelay, "-provider", prov.url(), "-provider-ca-file", prov.caFile)
			relayURL := "http://" + relayAddr + relay.DefaultBasePath
			startRawStage(t, "-nats-url", url, "-parts", partDispatch, "-partitions", "0,2,4,6", "-relay-url", relayURL)
			startRawStage(t, "-nats-url", url, "-parts", partDispatch, "-partitions", "1,3,5,7", "-relay-url", relayURL)
			return startRawStage(t, "-nats-url", url, "-parts", partIngest)
		}},
	} {
		t.Run(layout.name, func(t *testing.T) {
			dir := t.TempDir()
			prov, err := startProvider(dir, 4, newClock())
			if err != nil {
				t.Fatal(err)
			}
			defer prov.close()
			checkRawChain(t, "http://"+layout.stages(t, dir, prov), prov)
		})
	}
}

// startRawStage runs the raw chain with the flags args and a free HTTP
// address until the test ends, and returns the address once it is ready.
func startRawStage(t *testing.T, args ...string) string {
	t.Helper()
	ports, err := nettest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	cfg, err := parseRawChainConfig(append(args, "-http-addr", addr), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runRawChain(ctx, cfg, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the raw chain %v ended with %v", args, err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("the raw chain %v did not serve within 30s: %v", args, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkRawChain sends events to the raw chain's events API at base and
// checks the badges prov receives.
func checkRawChain(t *testing.T, base string, prov *provider) {
	deadline := time.Now().Add(30 * time.Second)
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"one event", `{"user":"u1@example.com","kind":"new","unread":3,"change_id":"a"}`, http.StatusOK},
		{"a batch", `{"user":"u2@example.com","kind":"new","unread":4,"change_id":"b"}` + "\n" + `{"user":"u3@example.com","kind":"new","unread":5,"change_id":"c"}` + "\n", http.StatusOK},
		{"not JSON", `{"user":`, http.StatusBadRequest},
		{"a batch with a bad line", `{"user":"u0@example.com","kind":"new","unread":9,"change_id":"d"}` + "\nnot json\n", http.StatusBadRequest},
		// After the refused batch, in user 0's partition: had the batch's
		// first event been stored, it would be pushed first.
		{"user 0 afterwards", `{"user":"u0@example.com","kind":"new","unread":1,"change_id":"e"}`, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(base+"/v1/events", "application/x-ndjson", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var answer map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
				t.Fatalf("the answer is not JSON: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%v), want %d", resp.StatusCode, answer, tc.status)
			}
			if tc.status != http.StatusOK && answer["error"] == nil {
				t.Fatalf("refused without an error: %v", answer)
			}
		})
	}
	want := []int64{1, 3, 4, 5}
	for !prov.covered(want) {
		if time.Now().After(deadline) {
			t.Fatalf("badges %v were not all pushed within 30s", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, why := prov.refused(); n > 0 {
		t.Fatalf("the provider refused %d pushes: %s", n, why)
	}
	prov.locked(func() {
		if got := prov.arrivals[0]; len(got) != 1 || got[0].count != 1 {
			t.Errorf("user 0 got badges %v, want only 1: the refused batch stored an event", got)
		}
	})
}

func TestRawChainFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error; "" for none
	}{
		{"every stage, embedded", []string{"-data-dir", "d", "-provider", "https://p", "-provider-ca-file", "ca"}, ""},
		{"no server", []string{"-provider", "https://p", "-provider-ca-file", "ca"}, "-data-dir or -nats-url"},
		{"a stage not known", []string{"-data-dir", "d", "-parts", "ingest,fetch"}, `"fetch" is not one of`},
		{"a partition out of range", []string{"-nats-url", "nats://x", "-parts", "dispatch", "-relay-url", "http://r", "-partitions", "0,8"}, `"8" is not a partition`},
		{"a partition not a number", []string{"-nats-url", "nats://x", "-parts", "dispatch", "-relay-url", "http://r", "-partitions", "one"}, `"one" is not a partition`},
		{"dispatch without a relay", []string{"-nats-url", "nats://x", "-parts", "dispatch"}, "needs -relay-url"},
		{"relay without a provider", []string{"-nats-url", "nats://x", "-parts", "relay"}, "needs -provider"},
		{"ingest alone", []string{"-nats-url", "nats://x", "-parts", "ingest"}, ""},
		{"an argument", []string{"-data-dir", "d", "-parts", "ingest", "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseRawChainConfig(tc.args, io.Discard)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}
