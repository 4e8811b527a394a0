package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/deadletter"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// publishDeadLetter stores a dead letter as the dispatcher does.
func publishDeadLetter(t *testing.T, conn *broker.Conn, user, reason string, count int) {
	t.Helper()
	key := brokertest.Keyer(t, conn).UserKey("fabrikam.com", user)
	dl := pushlog.DeadLetter{Tenant: "fabrikam.com", User: user, UserKey: key, Reason: reason, Attempts: 4,
		LastError: "publishing to https://relay: relay answered 503 Service Unavailable", Sequences: []uint64{11, 12},
		DeadAt: time.Now().UTC(),
		Notification: relayproto.Notification{ID: "n-" + user, Payload: relayproto.Payload{TenantID: "fabrikam.com", UnseenEmailCount: count},
			Recipients: []relayproto.Recipient{{AppID: "com.example.mail", DeviceID: "secret-token-" + user}}}}
	data, err := json.Marshal(dl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JS.Publish(context.Background(), pushlog.DeadSubject(key), data); err != nil {
		t.Fatal(err)
	}
}

func deadLetters(t *testing.T, conn *broker.Conn) uint64 {
	t.Helper()
	s, err := conn.JS.Stream(context.Background(), broker.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestDLQ(t *testing.T) {
	conn, url := startNATS(t)
	relay := newTestRelay(t)
	dir, thumb := setUpProxy(t, url, relay.URI())
	relay.register(t, dir, thumb)

	publishDeadLetter(t, conn, "alice@fabrikam.com", pushlog.ReasonExhausted, 3)
	publishDeadLetter(t, conn, "bob@fabrikam.com", pushlog.ReasonRejected, 1)
	publishDeadLetter(t, conn, "carol@fabrikam.com", pushlog.ReasonExhausted, 7)

	r := pushctl(t, "dlq", "list", url)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 4 || !strings.Contains(r.stdout, "alice@fabrikam.com") || strings.Contains(r.stdout, "secret-token") {
		t.Fatalf("list: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := pushctl(t, "dlq", "list", "--reason", "rejected", url); strings.Count(r.stdout, "\n") != 2 || !strings.Contains(r.stdout, "bob@") {
		t.Fatalf("list --reason:\n%s", r.stdout)
	}
	r = pushctl(t, "dlq", "list", "--user", "alice@fabrikam.com", "--since", "1h", "--json", url)
	var listed []deadletter.Letter
	if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 1 || listed[0].Seq != 1 {
		t.Fatalf("list --user --json: %v\n%s", err, r.stdout)
	}
	r = pushctl(t, "dlq", "show", "2", url)
	for _, want := range []string{"Seq              : 2", "User             : bob@fabrikam.com", "Reason           : rejected", "EventSequences   : 11, 12", "Devices          : com.example.mail/"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "secret-token") {
		t.Errorf("show prints the device token:\n%s", r.stdout)
	}

	r = pushctl(t, "dlq", "purge", "--user", "bob@fabrikam.com", url)
	if r.code != 2 || !strings.Contains(r.stderr, "1 dead letter(s) match; add --yes") || deadLetters(t, conn) != 3 {
		t.Fatalf("purge without --yes: %d %s", r.code, r.stderr)
	}
	if r := pushctl(t, "dlq", "purge", "--user", "bob@fabrikam.com", "--yes", url); r.code != 0 || deadLetters(t, conn) != 2 {
		t.Fatalf("purge --yes: %d %s", r.code, r.stderr)
	}

	r = pushctl(t, "dlq", "redrive", "1", url)
	if r.code != 0 || !strings.Contains(r.stdout, "redriven: count 3, 1 delivered") {
		t.Fatalf("redrive 1: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got := relay.Notifications()
	if len(got) != 1 || got[0].Payload.UnseenEmailCount != 3 || got[0].Recipients[0].DeviceID != "secret-token-alice@fabrikam.com" {
		t.Fatalf("the relay got %+v, want alice's notification once", got)
	}
	if r := pushctl(t, "dlq", "redrive", "--all", url); r.code != 0 || len(relay.Notifications()) != 2 {
		t.Fatalf("redrive --all: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if n := deadLetters(t, conn); n != 0 {
		t.Fatalf("%d dead letters left after the redrive", n)
	}
	if r := pushctl(t, "dlq", "list", url); r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "No dead letters") {
		t.Fatalf("list after redrive: %q %q", r.stdout, r.stderr)
	}

	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dlq", "redrive"}, 2, "give sequence numbers, filters, or --all"},
		{[]string{"dlq", "show"}, 2, "give the sequence number"},
		{[]string{"dlq", "show", "x1"}, 2, "not a dead letter's sequence number"},
		{[]string{"dlq", "show", "99"}, 1, "no such dead letter"},
		{[]string{"dlq", "list", "--until", "2h"}, 2, "--until"},
	}
	for _, tt := range tests {
		r := pushctl(t, append(tt.args, url)...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: %d %q, want %d with %q", tt.args, r.code, r.stderr, tt.code, tt.want)
		}
	}
}
