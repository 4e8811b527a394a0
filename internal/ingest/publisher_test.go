package ingest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
)

// TestPublishedMessagesCarryTheirOwnNames checks that every message of a
// batch mixing users goes to its own user's subject with its own
// deduplication id.
func TestPublishedMessagesCarryTheirOwnNames(t *testing.T) {
	h := newHarness(t)
	body := strings.Join([]string{
		`{"user":"alice@fabrikam.com","kind":"new","change_id":"1"}`,
		`{"user":"Alice@Fabrikam.com","kind":"new","change_id":"2"}`,
		`{"user":"bob@contoso.com","kind":"new","change_id":"1"}`,
		`{"user":"carol@fabrikam.com","kind":"read","change_id":"3","mailbox":"Entwürfe <&>"}`,
		`{"user":"carol@fabrikam.com","kind":"new","change_id":"4"}`,
		`{"user":"alice@fabrikam.com","kind":"new","change_id":"5"}`,
	}, "\n")
	if a := h.send(t, http.MethodPost, "/v1/events", ndjsonT, "native", []byte(body)); a.status != http.StatusOK {
		t.Fatalf("status %d: %s", a.status, a.raw)
	}
	ctx := context.Background()
	keyer, err := broker.Keyer(ctx, h.conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := h.conn.JS.Stream(ctx, broker.StreamMail)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 6; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("reading message %d: %v", seq, err)
		}
		e, err := events.Decode(msg.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if want := "." + keyer.UserKey(e.Tenant, e.User); !strings.HasSuffix(msg.Subject, want) {
			t.Errorf("message %d of %s is on %s, want a subject ending %s", seq, e.User, msg.Subject, want)
		}
		if got, want := msg.Header.Get(jetstream.MsgIDHeader), keyer.MsgID(&e); got != want {
			t.Errorf("message %d has id %q, want %q", seq, got, want)
		}
	}
}
