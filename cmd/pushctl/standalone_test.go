package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/ingest/ingesttest"
	"github.com/pushproxy/pushproxy/internal/logtest"
	"github.com/pushproxy/pushproxy/internal/nettest"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// startStandalone runs pushctl standalone on free loopback ports until the
// test ends, and returns its ingest and NATS addresses.
func startStandalone(t *testing.T, dataDir string) (ingestAddr, natsAddr, relayAddr string, stop func() int) {
	t.Helper()
	return startStandaloneWith(t, dataDir, nil)
}

// startStandaloneWith is startStandalone with a metrics registry (nil: its
// own) and more flags.
func startStandaloneWith(t *testing.T, dataDir string, reg *prometheus.Registry, flags ...string) (ingestAddr, natsAddr, relayAddr string, stop func() int) {
	t.Helper()
	ingestAddr, natsAddr, relayAddr = nettest.FreeAddr(t), nettest.FreeAddr(t), nettest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &logtest.Buffer{}, &logtest.Buffer{}
	done := make(chan int, 1)
	args := append([]string{"standalone", "--data-dir", dataDir, "--nats-listen", natsAddr,
		"--http-addr", ingestAddr, "--relay-http-addr", relayAddr, "--log-format", "json",
		"--window", "20ms", "--canary-interval", "300ms"}, flags...)
	go func() {
		done <- run(ctx, args, &cli{stdout: stdout, stderr: stderr, getenv: func(string) string { return "" }, registry: reg})
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(stdout.String(), "Subscribe a device") {
		select {
		case code := <-done:
			t.Fatalf("standalone exited with %d:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("standalone did not start:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var once sync.Once
	code := 0
	stop = func() int {
		once.Do(func() {
			cancel()
			code = <-done
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return ingestAddr, natsAddr, relayAddr, stop
}

// connectStandalone connects to a standalone's NATS at natsAddr, closed
// when the test ends, and reads its keyer.
func connectStandalone(t *testing.T, natsAddr string) (*broker.Conn, *events.Keyer) {
	t.Helper()
	conn, err := broker.Connect(context.Background(), broker.Options{URLs: []string{"nats://" + natsAddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	keyer, err := broker.Keyer(context.Background(), conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	return conn, keyer
}

// post sends body to ingest's url as the native client of the test.
func post(t *testing.T, url, body string) int {
	t.Helper()
	return ingesttest.Post(t, url, standaloneToken, body)
}

// TestStandaloneEndToEnd runs the README's example against pushctl
// standalone: a device subscription and an event become a push recorded in
// PUSH_SENT, through ingest, dispatcher and the relay, with S2S tokens.
func TestStandaloneEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	ingestAddr, natsAddr, relayAddr, stop := startStandalone(t, dataDir)
	base := "http://" + ingestAddr
	if code := post(t, base+"/v1/subscriptions", `{"tenant":"example.com","user":"alice@example.com","appId":"demo","deviceId":"phone-1","platform":"APNS","label":"alice's iPhone"}`); code != http.StatusCreated {
		t.Fatalf("subscribe: %d", code)
	}
	if code := post(t, base+"/v1/events", `{"user":"alice@example.com","kind":"new","unread":3,"change_id":"msg-1","occurred_at":"2026-01-01T00:00:00Z"}`); code != http.StatusOK {
		t.Fatalf("event: %d", code)
	}

	conn, keyer := connectStandalone(t, natsAddr)
	rec := waitForSent(t, conn.JS, keyer, "example.com", "alice@example.com")
	if rec.Count != 3 || rec.Devices != 1 {
		t.Fatalf("push record %+v, want count 3 to 1 device", rec)
	}
	if r := pushctl(t, "probe", "--nats-url", "nats://"+natsAddr); r.code != 0 || !strings.Contains(r.stdout, "ResultType : Succeeded") {
		t.Fatalf("probe against standalone: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// One view of the user: state, device (by reference), event, push.
	r := pushctl(t, "trace", "--user", "alice@example.com", "--nats-url", "nats://"+natsAddr)
	for _, want := range []string{"count 3 (exact)", "3 pushed at", "demo/", "alice's iPhone", "new", "INBOX"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("trace lacks %q: %d\n%s%s", want, r.code, r.stdout, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "phone-1") {
		t.Fatalf("trace shows the device token:\n%s", r.stdout)
	}
	// One reference follows the device: pushctl (and ingest and the
	// dispatcher, which log the same) and the relay's devices page.
	ref := relayproto.DeviceRef("demo", "phone-1")
	if !strings.Contains(r.stdout, ref) {
		t.Fatalf("trace does not name the device %s:\n%s", ref, r.stdout)
	}
	resp, err := http.Get("http://" + relayAddr + "/devices/devices.json")
	if err != nil {
		t.Fatal(err)
	}
	type pageDevice struct{ Tenant, User, Label, Device string }
	var page struct{ Devices []pageDevice }
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	want := pageDevice{Tenant: "example.com", User: "alice@example.com", Label: "alice's iPhone", Device: ref}
	if err != nil || !slices.Contains(page.Devices, want) {
		t.Fatalf("the devices page does not show %+v: %+v %v", want, page.Devices, err)
	}
	// Reading the relay's metadata keeps the audience the relay expects.
	if r := pushctl(t, "auth", "set-server", "--metadata-url", "http://"+relayAddr+"/PushNotifications/metadata/json/1", "--nats-url", "nats://"+natsAddr); r.code != 0 {
		t.Fatalf("set-server: %d %s", r.code, r.stderr)
	}
	if r := pushctl(t, "probe", "--nats-url", "nats://"+natsAddr); r.code != 0 {
		t.Fatalf("probe after set-server: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitForSent(t, conn.JS, keyer, "example.com", "canary@example.com")
	conn.Close()
	if code := stop(); code != 0 {
		t.Fatalf("standalone exited with %d after Ctrl-C", code)
	}

	// A second start keeps the certificate and the proxy settings.
	first := pushctlAuthThumbprint(t, dataDir)
	_, natsAddr, _, stop = startStandalone(t, dataDir)
	if r := pushctl(t, "auth", "show", "--nats-url", "nats://"+natsAddr); !strings.Contains(r.stdout, first) {
		t.Fatalf("restart changed the certificate:\n%s", r.stdout)
	}
	stop()
}

func pushctlAuthThumbprint(t *testing.T, dataDir string) string {
	t.Helper()
	entries, err := filepath.Glob(dataDir + "/auth/*.pem")
	if err != nil || len(entries) != 1 {
		t.Fatalf("certificates in %s/auth: %v %v", dataDir, entries, err)
	}
	name := entries[0][strings.LastIndex(entries[0], "/")+1:]
	return strings.TrimSuffix(name, ".pem")
}

func waitForSent(t *testing.T, js jetstream.JetStream, keyer *events.Keyer, tenant, user string) pushlog.SentRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	subject := pushlog.SentSubject(keyer.UserKey(tenant, user))
	for {
		stream, err := js.Stream(ctx, broker.StreamSent)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := stream.GetLastMsgForSubject(ctx, subject)
		if err == nil {
			var rec pushlog.SentRecord
			if err := json.Unmarshal(msg.Data, &rec); err != nil {
				t.Fatal(err)
			}
			return rec
		}
		if ctx.Err() != nil {
			t.Fatalf("no push for %s within 60s: %v", fmt.Sprint(user), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStandaloneReadyWhenBannerPrinted checks the start-up order: once the
// banner is out, /readyz answers ready and no probe failed on the way; a
// second standalone on the same data directory fails at once with the
// holder's pid and leaves the first untouched.
func TestStandaloneReadyWhenBannerPrinted(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	ingestAddr, _, _, _ := startStandalone(t, dataDir)
	resp, err := http.Get("http://" + ingestAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz right after the banner: %s", resp.Status)
	}

	stdout, stderr := &logtest.Buffer{}, &logtest.Buffer{}
	start := time.Now()
	code := run(context.Background(), []string{"standalone", "--data-dir", dataDir, "--nats-listen", nettest.FreeAddr(t),
		"--http-addr", nettest.FreeAddr(t), "--relay-http-addr", nettest.FreeAddr(t), "--log-format", "json"},
		&cli{stdout: stdout, stderr: stderr, getenv: func(string) string { return "" }})
	if code == 0 {
		t.Fatal("a second standalone on the same data directory started")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the second standalone took %s to fail, want under 2s", took)
	}
	if !strings.Contains(stderr.String(), "in use") || !strings.Contains(stderr.String(), "pid ") {
		t.Errorf("the second standalone's error does not say the directory is in use by a pid:\n%s", stderr.String())
	}
	if post(t, "http://"+ingestAddr+"/v1/events", `{"tenant":"example.com","user":"bob@example.com","kind":"new","unread":1,"change_id":"after-second"}`) != http.StatusOK {
		t.Fatal("the first standalone stopped taking events after the second tried to start")
	}
}
