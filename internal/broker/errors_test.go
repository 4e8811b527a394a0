package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/logtest"
)

// TestPermissionViolationsAreLogged: a request the user may not make only
// times out for the caller; the server's refusal reaches the log.
func TestPermissionViolationsAreLogged(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: "dispatcher", Password: "secret",
			Permissions: &server.Permissions{Publish: &server.SubjectPermission{Deny: []string{"forbidden"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	var logs logtest.Buffer
	conn, err := broker.Connect(context.Background(), broker.Options{URLs: []string{srv.ClientURL()}, User: "dispatcher", Password: "secret",
		Log: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.NC.Publish("forbidden", []byte("x")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "Permissions Violation") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line of the refused publish; the log: %q", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), `"level":"error"`) || !strings.Contains(logs.String(), "NATS reported an error on the connection") {
		t.Fatalf("log = %q", logs.String())
	}
}
