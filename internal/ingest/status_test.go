package ingest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/nettest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
)

// TestGatherStatusFromEveryIngest runs two ingests on one NATS: each
// answers the status request with the events it stored per source and
// tenant (duplicates not counted), and pushctl gathers both.
func TestGatherStatusFromEveryIngest(t *testing.T) {
	conn := brokertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make([]string, 2)
	done := make(chan error, len(addrs))
	for i := range addrs {
		addrs[i] = nettest.FreeAddr(t)
		cfg := ingest.DefaultConfig()
		cfg.Addr = addrs[i]
		cfg.NativeTokens = []string{nativeToken}
		go func() { done <- ingest.Run(ctx, cfg, conn, zerolog.Nop(), prometheus.NewRegistry()) }()
	}
	defer func() {
		cancel()
		for range addrs {
			if err := <-done; err != nil {
				t.Errorf("ingest: %v", err)
			}
		}
	}()
	post := func(addr, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/events", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+nativeToken)
		req.Header.Set("Content-Type", "application/json")
		for deadline := time.Now().Add(10 * time.Second); ; {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("event: %d", resp.StatusCode)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ingest %s not serving: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
			req.Body, _ = req.GetBody()
		}
	}
	post(addrs[0], `{"user":"alice@fabrikam.com","kind":"new","unread":1,"change_id":"m-1"}`)
	post(addrs[0], `{"user":"alice@fabrikam.com","kind":"new","unread":1,"change_id":"m-1"}`) // a duplicate
	post(addrs[0], `{"user":"bob@contoso.com","kind":"new","unread":2,"change_id":"m-2"}`)
	post(addrs[1], `{"user":"carol@fabrikam.com","kind":"new","unread":3,"change_id":"m-3"}`)

	statuses, err := ingest.GatherStatus(ctx, conn.NC, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(statuses) != 2 {
		t.Fatalf("%d ingests answered, want 2: %+v", len(statuses), statuses)
	}
	counts := map[string]uint64{}
	for _, st := range statuses {
		if st.Instance == "" || st.Started.IsZero() {
			t.Errorf("status without its process: %+v", st)
		}
		for _, a := range st.Sources {
			if a.Source != events.SourceNative || a.LastEvent.IsZero() {
				t.Errorf("activity %+v", a)
			}
			counts[a.Tenant] += a.Events
		}
	}
	if counts["fabrikam.com"] != 2 || counts["contoso.com"] != 1 || len(counts) != 2 {
		t.Fatalf("events per tenant %v, want fabrikam.com 2 (one duplicate not counted) and contoso.com 1", counts)
	}
}

func TestGatherStatusWithoutIngests(t *testing.T) {
	conn := brokertest.Start(t)
	statuses, err := ingest.GatherStatus(context.Background(), conn.NC, 100*time.Millisecond)
	if err != nil || len(statuses) != 0 {
		t.Fatalf("%+v, %v", statuses, err)
	}
}
