package pushlog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

func TestRecordsRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	prev := 2
	sent := pushlog.SentRecord{ID: "n", UserKey: "fabrikam_com.u", Count: 3, Previous: &prev, SentAt: at, Origin: "redrive"}
	data, err := pushlog.Encode(sent)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pushlog.Decode[pushlog.SentRecord](data)
	if err != nil || got.Count != 3 || *got.Previous != 2 || !got.SentAt.Equal(at) || got.Origin != "redrive" {
		t.Fatalf("SentRecord round trip: %+v %v", got, err)
	}
	tomb := pushlog.Tombstone{Subscription: subscriptions.Subscription{Tenant: "fabrikam.com", AppID: "a", DeviceID: "d"}, Reason: "apns: 410 Unregistered", RemovedAt: at}
	if data, err = pushlog.Encode(tomb); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"subscription"`, `"reason"`, `"removed_at"`} {
		if !strings.Contains(string(data), field) {
			t.Errorf("tombstone JSON %s lacks %s", data, field)
		}
	}
	if _, err := pushlog.Decode[pushlog.DeadLetter]([]byte("{")); err == nil || !strings.Contains(err.Error(), "decoding pushlog.DeadLetter") {
		t.Fatalf("bad JSON: %v", err)
	}
}

func TestSubjects(t *testing.T) {
	if got := pushlog.SentSubject("t.u"); got != "push.sent.t.u" {
		t.Errorf("SentSubject = %s", got)
	}
	if got := pushlog.DeadSubject("t.u"); got != "push.dead.t.u" {
		t.Errorf("DeadSubject = %s", got)
	}
}
