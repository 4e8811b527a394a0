package events

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func validEvent() Event {
	return Event{
		Tenant:     "fabrikam.com",
		User:       "alice@fabrikam.com",
		Kind:       KindNew,
		Unread:     IntPtr(3),
		ChangeID:   "c1",
		OccurredAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
	}
}

func TestNormalize(t *testing.T) {
	e := Event{Tenant: " Fabrikam.COM. ", User: " alice@fabrikam.com ", Mailbox: "inbox", Kind: KindNew, UIDValidity: 7, UID: 4}
	e.Normalize()
	if e.Version != SchemaVersion || e.Tenant != "fabrikam.com" || e.User != "alice@fabrikam.com" ||
		e.Mailbox != Inbox || e.Count != 1 || e.Source != SourceNative || e.ChangeID != "uid:INBOX/7/4/new" {
		t.Fatalf("normalized %+v", e)
	}
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	read := Event{Kind: KindRead, UIDValidity: 7, UID: 4, OccurredAt: at}
	read.Normalize()
	again := Event{Kind: KindRead, UIDValidity: 7, UID: 4, OccurredAt: at.Add(time.Minute)}
	again.Normalize()
	if read.ChangeID == again.ChangeID {
		t.Fatalf("reading a message again later has the same change id %q", read.ChangeID)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Event)
		field  string
	}{
		{"valid", func(*Event) {}, ""},
		{"version", func(e *Event) { e.Version = 2 }, "v"},
		{"no tenant", func(e *Event) { e.Tenant = "" }, "tenant"},
		{"tenant one label", func(e *Event) { e.Tenant = "localhost" }, "tenant"},
		{"tenant wildcard", func(e *Event) { e.Tenant = "fab*.com" }, "tenant"},
		{"tenant upper", func(e *Event) { e.Tenant = "Fabrikam.com" }, "tenant"},
		{"tenant underscore", func(e *Event) { e.Tenant = "fab_rikam.com" }, "tenant"},
		{"no user", func(e *Event) { e.User = "" }, "user"},
		{"user space", func(e *Event) { e.User = "a b@c.d" }, "user"},
		{"user too long", func(e *Event) { e.User = strings.Repeat("a", MaxAddressLen+1) }, "user"},
		{"unknown kind", func(e *Event) { e.Kind = "exploded" }, "kind"},
		{"moved needs origin", func(e *Event) { e.Kind = KindMoved }, "from_mailbox"},
		{"origin only for moved", func(e *Event) { e.FromMailbox = "Trash" }, "from_mailbox"},
		{"snapshot needs unread", func(e *Event) { e.Kind = KindSnapshot; e.Unread = nil }, "unread"},
		{"negative unread", func(e *Event) { e.Unread = IntPtr(-1) }, "unread"},
		{"huge unread", func(e *Event) { e.Unread = IntPtr(MaxUnread + 1) }, "unread"},
		{"zero count", func(e *Event) { e.Count = 0 }, "count"},
		{"no change id", func(e *Event) { e.ChangeID = "" }, "change_id"},
		{"no time", func(e *Event) { e.OccurredAt = time.Time{} }, "occurred_at"},
		{"unknown source", func(e *Event) { e.Source = "fax" }, "source"},
		{"control in mailbox", func(e *Event) { e.Mailbox = "IN\x00BOX" }, "mailbox"},
	}
	var shared Validator // checks the same after every other case
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent()
			e.Normalize()
			tt.change(&e)
			err := e.Validate()
			for range 2 {
				if serr := shared.Validate(&e); fmt.Sprint(serr) != fmt.Sprint(err) {
					t.Fatalf("a reused Validator says %v, Validate says %v", serr, err)
				}
			}
			if tt.field == "" {
				if err != nil {
					t.Fatalf("valid event rejected: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want a ValidationError on %q", err, tt.field)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	e := validEvent()
	e.Normalize()
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Unread != 3 || got.User != e.User || !got.OccurredAt.Equal(e.OccurredAt) {
		t.Fatalf("round trip changed the event: %+v", got)
	}
	if _, err := Decode([]byte(`{"v":1`)); err == nil {
		t.Fatal("truncated JSON decoded")
	}
}

func TestDeltaFor(t *testing.T) {
	tests := []struct {
		kind       Kind
		mailbox    string
		from       string
		count      int
		wantInbox  int
		wantTarget bool
	}{
		{KindNew, Inbox, "", 2, 2, true},
		{KindUnread, Inbox, "", 1, 1, true},
		{KindRead, Inbox, "", 3, -3, true},
		{KindDeleted, Inbox, "", 1, -1, true},
		{KindFlags, Inbox, "", 1, 0, true},
		{KindSnapshot, Inbox, "", 1, 0, true},
		{KindNew, "Sent", "", 1, 0, false},
		{KindMoved, "Archive", Inbox, 2, -2, true},
		{KindMoved, Inbox, "Junk", 1, 1, true},
	}
	for _, tt := range tests {
		e := Event{Kind: tt.kind, Mailbox: tt.mailbox, FromMailbox: tt.from, Count: tt.count}
		if got := e.DeltaFor(Inbox); got != tt.wantInbox {
			t.Errorf("%s %s<-%s: DeltaFor(INBOX) = %d, want %d", tt.kind, tt.mailbox, tt.from, got, tt.wantInbox)
		}
		if got := e.Concerns(Inbox); got != tt.wantTarget {
			t.Errorf("%s %s<-%s: Concerns(INBOX) = %v", tt.kind, tt.mailbox, tt.from, got)
		}
	}
}

// TestValidateTextAgreesWithUnicode checks the ASCII shortcuts of address
// and mailbox validation against the Unicode tables, for every ASCII
// character alone and after a non-ASCII one.
func TestValidateTextAgreesWithUnicode(t *testing.T) {
	for c := rune(0); c < utf8.RuneSelf; c++ {
		for _, prefix := range []string{"", "é", "a\u0085"} {
			s := prefix + "a" + string(c) + "b"
			addrOK := true
			mailboxOK := true
			for _, r := range s {
				addrOK = addrOK && !unicode.IsSpace(r) && unicode.IsPrint(r)
				mailboxOK = mailboxOK && !unicode.IsControl(r)
			}
			if got := ValidateAddress("user", s) == nil; got != addrOK {
				t.Errorf("ValidateAddress(%q) ok = %v, want %v", s, got, addrOK)
			}
			if got := validateMailbox("mailbox", s) == nil; got != mailboxOK {
				t.Errorf("validateMailbox(%q) ok = %v, want %v", s, got, mailboxOK)
			}
		}
	}
}
