package ingest_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/ingest"
)

// expect503 checks a "JetStream unavailable" answer.
func expect503(t *testing.T, a *answer) {
	t.Helper()
	if a.status != http.StatusServiceUnavailable || a.errorCode() != ingest.CodeUnavailable || a.header.Get("Retry-After") != "5" {
		t.Fatalf("got %d %q Retry-After %q, want 503 unavailable 5: %s", a.status, a.errorCode(), a.header.Get("Retry-After"), a.raw)
	}
}

// retryUntilStored resends like a source honouring Retry-After would (but
// faster) until the answer is 200.
func retryUntilStored(t *testing.T, send func() *answer) *answer {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		a := send()
		if a.status == http.StatusOK {
			return a
		}
		if a.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("got %d while waiting for JetStream: %s", a.status, a.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMissingStream: with no stream bound to the subjects a publish gets no
// responders; ingest answers 503 and stores the events once the stream is
// provisioned again.
func TestMissingStream(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.conn.JS.DeleteStream(ctx, broker.StreamMail); err != nil {
		t.Fatal(err)
	}
	send := func() *answer {
		return h.send(t, http.MethodPut, "/v1/dovecot/ox", jsonCT, "dovecot", []byte(oxBody))
	}
	expect503(t, send())
	if err := broker.Provision(ctx, h.conn.JS, broker.DefaultLayout()); err != nil {
		t.Fatal(err)
	}
	if a := retryUntilStored(t, send); outcomes(a) != "stored@1" {
		t.Fatalf("after re-provisioning: %s", a.raw)
	}
	if n := len(h.stored(t)); n != 1 {
		t.Fatalf("stream holds %d events, want 1", n)
	}
}

// TestNATSRestart stops the NATS server under a connected ingest: requests
// meanwhile get 503 with Retry-After; once the server is back on the same
// storage, retried requests are stored and what was acknowledged before
// the outage is still there.
func TestNATSRestart(t *testing.T) {
	embedded := brokertest.Start(t, brokertest.WithListen())
	srv := embedded.Server()
	storeDir := filepath.Dir(srv.StoreDir())
	u, err := url.Parse(embedded.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := broker.Connect(ctx, broker.Options{Name: "ingest-test", URLs: []string{embedded.ClientURL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	h := serveOn(t, conn)
	send := func(body string) *answer {
		return h.send(t, http.MethodPost, "/v1/events", ndjsonT, "native", []byte(body))
	}
	before := `{"user":"alice@fabrikam.com","kind":"new","change_id":"before"}`
	during := `{"user":"alice@fabrikam.com","kind":"new","change_id":"during"}` + "\n" + before
	if a := send(before); a.status != 200 {
		t.Fatalf("before the outage: %d %s", a.status, a.raw)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	waitStatus(t, conn.NC, nats.RECONNECTING)
	expect503(t, send(during))

	restarted, err := broker.StartEmbedded(storeDir, net.JoinHostPort(u.Hostname(), u.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.Shutdown(); restarted.WaitForShutdown() })
	waitStatus(t, conn.NC, nats.CONNECTED)
	if a := retryUntilStored(t, func() *answer { return send(during) }); outcomes(a) != "stored@2,duplicate@1" {
		t.Fatalf("after the restart: %s", a.raw)
	}
	got := h.stored(t)
	if len(got) != 2 || got[0].ChangeID != "before" || got[1].ChangeID != "during" {
		t.Fatalf("stream holds %+v, want the events before and during the outage", got)
	}
}

func waitStatus(t *testing.T, nc *nats.Conn, want nats.Status) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for nc.Status() != want {
		if time.Now().After(deadline) {
			t.Fatalf("NATS connection is %s, want %s", nc.Status(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
