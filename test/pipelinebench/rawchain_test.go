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

	"github.com/pushproxy/pushproxy/internal/nettest"
)

// TestRawChainPushesEveryEvent runs the raw chain on a real embedded
// JetStream server and the bench's provider: every stored event, one per
// request or in a batch, reaches its user's device as a badge, and a
// request it cannot read is refused with a JSON error and stores nothing.
func TestRawChainPushesEveryEvent(t *testing.T) {
	dir := t.TempDir()
	prov, err := startProvider(dir, 4, newClock())
	if err != nil {
		t.Fatal(err)
	}
	defer prov.close()
	ports, err := nettest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runRawChain(ctx, rawChainConfig{dataDir: dir + "/data", httpAddr: addr, providerURL: prov.url(), providerCA: prov.caFile}, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the raw chain ended with %v", err)
		}
	}()
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/metrics")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the raw chain did not serve within 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

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
