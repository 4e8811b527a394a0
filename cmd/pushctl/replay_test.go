package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// publishEvents stores events in the MAIL stream as ingest would.
func publishEvents(t *testing.T, conn *broker.Conn, evs ...events.Event) {
	t.Helper()
	keyer := brokertest.Keyer(t, conn)
	for _, e := range evs {
		e.Normalize()
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.JS.Publish(context.Background(), keyer.Subject(e.Tenant, e.User), data); err != nil {
			t.Fatal(err)
		}
	}
}

func mailEvent(user string, kind events.Kind, unread *int, id string) events.Event {
	return events.Event{Tenant: "fabrikam.com", User: user, Kind: kind, Unread: unread, ChangeID: id, OccurredAt: time.Now(), Source: events.SourceDovecotLua}
}

func TestReplay(t *testing.T) {
	conn, url := startNATS(t)
	relay := newTestRelay(t)
	dir, thumb := setUpProxy(t, url, relay.URI())
	relay.register(t, dir, thumb)
	ctx := context.Background()

	publishEvents(t, conn,
		mailEvent("alice@fabrikam.com", events.KindSnapshot, events.IntPtr(3), "a1"),
		mailEvent("bob@fabrikam.com", events.KindNew, nil, "b1"),
		mailEvent("alice@fabrikam.com", events.KindNew, nil, "a2"),
		mailEvent("Alice@fabrikam.com", events.KindNew, nil, "a3"),
		mailEvent("alice@fabrikam.com", events.KindRead, nil, "a4"),
	)

	r := pushctl(t, "replay", "--user", "alice@fabrikam.com", "--dry-run", url)
	if r.code != 0 {
		t.Fatalf("replay --dry-run: %d %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"Replay of alice@fabrikam.com (tenant fabrikam.com): 4 event(s)",
		"snapshot  INBOX    =3      3\n",
		"new       INBOX    +1      4 (estimated)\n",
		"new       INBOX    +1      5 (estimated)\n",
		"read      INBOX    -1      4 (estimated)\n",
		"Final unread count: 4 (estimated",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("replay output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "Unread state set") || len(relay.Notifications()) != 0 {
		t.Fatalf("--dry-run pushed:\n%s", r.stdout)
	}

	// Without devices the push is refused, after the report.
	r = pushctl(t, "replay", "--user", "alice@fabrikam.com", url)
	if r.code != 1 || !strings.Contains(r.stderr, "no device subscriptions") || !strings.Contains(r.stdout, "Final unread count") {
		t.Fatalf("replay without devices: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	keyer := brokertest.Keyer(t, conn)
	subs, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := subs.Put(ctx, subscriptions.Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com",
		AppID: "com.example.mail", DeviceID: "token-1", Platform: "APNS", Options: subscriptions.OptionEmail | subscriptions.OptionBackgroundSync, Language: "es-ES"}); err != nil {
		t.Fatal(err)
	}
	r = pushctl(t, "replay", "--user", "alice@fabrikam.com", "--since", "1h", url)
	if r.code != 0 || !strings.Contains(r.stdout, "Unread state set to 4 (was 0). Pushed 4 to 1 device(s): 1 delivered") {
		t.Fatalf("replay: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got := relay.Notifications()
	if len(got) != 1 || got[0].Payload.UnseenEmailCount != 4 || got[0].Payload.Language != "es-ES" || got[0].Payload.BackgroundSyncType != "Email" || got[0].Recipients[0].DeviceID != "token-1" {
		t.Fatalf("relay got %+v", got)
	}
	states, err := unread.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := states.Get(ctx, keyer.UserKey("fabrikam.com", "alice@fabrikam.com"))
	if err != nil || st.Count != 4 || st.Exact || st.LastSeq != 5 || st.LastPushedCount == nil || *st.LastPushedCount != 4 {
		t.Fatalf("unread state %+v %v", st, err)
	}

	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"replay"}, 2, "--user is required"},
		{[]string{"replay", "--user", "carol@fabrikam.com"}, 1, "no events of this user"},
		{[]string{"replay", "--user", "alice@fabrikam.com", "--since", "yesterday"}, 2, "want a duration such as 2h"},
		{[]string{"replay", "--user", "alice@fabrikam.com", "--until", "1h"}, 2, "--until"},
		{[]string{"replay", "--user", "alice@fabrikam.com", "--until", "2000-01-01"}, 1, "no events"},
	}
	for _, tt := range tests {
		r := pushctl(t, append(tt.args, url)...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: %d %q, want %d with one line containing %q", tt.args, r.code, r.stderr, tt.code, tt.want)
		}
	}
	if r := pushctl(t, "replay", "--help"); r.code != 0 || !strings.Contains(r.stderr+r.stdout, "Without --dry-run it then changes two things") {
		t.Fatalf("--help: %s%s", r.stdout, r.stderr)
	}
}
