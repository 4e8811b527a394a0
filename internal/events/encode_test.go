package events

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestEncodeMatchesEncodingJSON checks that the hand-written encoder writes
// exactly what encoding/json writes for an Event.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
	zone := time.FixedZone("", -(3*3600 + 30*60))
	tests := []struct {
		name string
		e    Event
	}{
		{"zero", Event{}},
		{"valid", validEvent()},
		{"full", Event{Version: 1, Tenant: "fabrikam.com", User: "alice@fabrikam.com", Mailbox: "Archive/2026",
			FromMailbox: "INBOX", Kind: KindMoved, Unread: IntPtr(0), Count: 7, ChangeID: "c-1",
			UIDValidity: 4294967295, UID: 1, OccurredAt: at, Source: SourceDovecotLua, ReceivedAt: at.Add(time.Second)}},
		{"negative numbers", Event{Version: -3, Unread: IntPtr(-1), Count: -2, OccurredAt: at}},
		{"unicode", Event{User: "jürgen@bücher.example", Mailbox: "Entwürfe/日本語/😀", ChangeID: "ü", OccurredAt: at}},
		{"escapes", Event{User: "a\"b\\c", Mailbox: "tab\tnl\ncr\rbs\bff\fnul\x00esc\x1bdel\x7f", ChangeID: "/slash/", OccurredAt: at}},
		{"html", Event{Mailbox: "<script>&amp;</script>", ChangeID: "a>b<c&d", OccurredAt: at}},
		{"invalid utf8", Event{Mailbox: "bad\xff\xfe\xc3", ChangeID: "\xe2\x82", User: "x\xc3\x28y", OccurredAt: at}},
		{"line separators", Event{Mailbox: "a\u2028b\u2029c", OccurredAt: at}},
		{"zoned times", Event{OccurredAt: at.In(zone), ReceivedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, zone)}},
		{"whole second", Event{OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}},
		{"year 0 and 9999", Event{OccurredAt: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), ReceivedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}},
		{"local time", Event{OccurredAt: at.Local(), Kind: KindSnapshot, Source: SourceGraph}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkEncode(t, &tt.e)
		})
	}
}

// TestEncodeRefusesTimesLikeEncodingJSON checks that times encoding/json
// cannot write fail with its error.
func TestEncodeRefusesTimesLikeEncodingJSON(t *testing.T) {
	for _, e := range []Event{
		{OccurredAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{OccurredAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), ReceivedAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		_, want := json.Marshal(&e)
		prefix := []byte("prefix")
		got, err := e.AppendEncode(prefix)
		if err == nil || want == nil {
			t.Fatalf("AppendEncode error %v, encoding/json error %v: want both to fail", err, want)
		}
		if err.Error() != "encoding event: "+want.Error() || string(got) != "prefix" {
			t.Fatalf("AppendEncode = %q, %v; want \"prefix\", encoding event: %v", got, err, want)
		}
	}
}

// FuzzEncode compares Encode with encoding/json for arbitrary strings.
func FuzzEncode(f *testing.F) {
	f.Add("alice@fabrikam.com", "INBOX", "c1", int64(0))
	f.Add("a\"b\\<>&\u2028\x00", "Entwürfe\xff", "😀\u2029", int64(1764064800123456789))
	f.Fuzz(func(t *testing.T, user, mailbox, changeID string, nanos int64) {
		e := Event{Version: 1, Tenant: user, User: user, Mailbox: mailbox, FromMailbox: changeID, Kind: Kind(changeID),
			ChangeID: changeID, OccurredAt: time.Unix(0, nanos).UTC(), Source: Source(mailbox)}
		checkEncode(t, &e)
	})
}

func checkEncode(t *testing.T, e *Event) {
	t.Helper()
	want, werr := json.Marshal(e)
	got, err := e.Encode()
	if (err != nil) != (werr != nil) {
		t.Fatalf("Encode error %v, encoding/json error %v", err, werr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode:\n got %s\nwant %s", got, want)
	}
	prefixed, err := e.AppendEncode([]byte("x"))
	if err != nil || string(prefixed) != "x"+string(want) {
		t.Fatalf("AppendEncode = %s, %v", prefixed, err)
	}
}
