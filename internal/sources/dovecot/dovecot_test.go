package dovecot

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

// summary is one line per item: kind, mailbox, unread (or -), count and
// change id; or the error's field and reason.
func summary(items []sources.Item) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		if it.Err != nil {
			var ve *events.ValidationError
			if errors.As(it.Err, &ve) {
				out = append(out, "error "+ve.Field+": "+ve.Reason)
			} else {
				out = append(out, "error "+it.Err.Error())
			}
			continue
		}
		e := it.Event
		unread := "-"
		if e.Unread != nil {
			unread = fmt.Sprint(*e.Unread)
		}
		out = append(out, fmt.Sprintf("%s %s unread=%s count=%d %s", e.Kind, e.Mailbox, unread, e.Count, e.ChangeID))
	}
	return out
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	return testfs.Read(t, filepath.Join("testdata", name))
}

func TestParseOXGolden(t *testing.T) {
	items, err := ParseOX(readTestdata(t, "ox-messagenew.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"new INBOX unread=2 count=0 ox:INBOX/1795623633/4"}
	if got := summary(items); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	e := items[0].Event
	if e.User != "alice@example.com" || e.Source != events.SourceDovecotOX || e.UID != 4 || e.UIDValidity != 1795623633 {
		t.Fatalf("event = %+v", e)
	}
}

func TestParseOX(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"documented case", `{"user":"u@d.example","event":"MessageNew","folder":"Work","imap-uidvalidity":1,"imap-uid":2}`,
			[]string{"new Work unread=- count=0 ox:Work/1/2"}},
		{"unknown fields ignored", `{"user":"u@d.example","event":"messageNew","folder":"INBOX","imap-uidvalidity":1,"imap-uid":2,"unseen":0,"new-field":[1]}`,
			[]string{"new INBOX unread=0 count=0 ox:INBOX/1/2"}},
		{"long folder hashed", `{"user":"u","event":"messageNew","folder":"` + strings.Repeat("f", 300) + `","imap-uidvalidity":1,"imap-uid":2}`,
			[]string{"new " + strings.Repeat("f", 300) + " unread=- count=0 ox:sha256:" + folderID(strings.Repeat("f", 300))[7:] + "/1/2"}},
		{"other event", `{"user":"u","event":"messageRead","imap-uid":2}`,
			[]string{`error event: unsupported event "messageRead" (the OX driver reports only messageNew)`}},
		{"no uid", `{"user":"u","event":"messageNew"}`,
			[]string{"error imap-uid: required: a positive message UID"}},
		{"wrong type", `{"user":"u","event":"messageNew","imap-uid":"4"}`,
			[]string{"error imap-uid: must be an integer from 0 to 4294967295, got string"}},
		{"negative unseen passes to validation", `{"user":"u","event":"messageNew","imap-uid":4,"unseen":-1}`,
			[]string{"new  unread=-1 count=0 ox:/0/4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, err := ParseOX([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(items); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParseLuaGolden(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"lua-new.json", []string{"new INBOX unread=3 count=0 AbWUDgsVB2uNEwAAg+zDdQ.6b07150b884e.1/0"}},
		{"lua-read.json", []string{"read INBOX unread=1 count=0 1ewlzhxheON/AAAB.6b0714dd3f26.1/2"}},
		{"lua-unread.json", []string{"unread INBOX unread=2 count=0 1ewlzhxheON/AAAB.6b0714dd3f26.2/0"}},
		{"lua-trash.json", []string{"deleted INBOX unread=2 count=0 1ewlzhxheON/AAAB.6b0714dd3f26.4/2"}},
		{"lua-expunge.json", []string{"deleted INBOX unread=1 count=0 1ewlzhxheON/AAAB.6b0714dd3f26.5/0"}},
		{"lua-folded.json", []string{"read INBOX unread=0 count=4 FkYE0Rxh5pl/AAAB.6b07150d398e.2/2"}},
		{"lua-copy.json", []string{
			`new Arch\iv"e unread=- count=0 FkYE0Rxh5pl/AAAB.6b07150d398e.3/0`,
			`new Arch\iv"e unread=- count=0 FkYE0Rxh5pl/AAAB.6b07150d398e.3/1`,
			`new Arch\iv"e unread=0 count=2 FkYE0Rxh5pl/AAAB.6b07150d398e.3/2`,
			"snapshot INBOX unread=0 count=0 FkYE0Rxh5pl/AAAB.6b07150d398e.3/s1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			items, err := ParseLua(readTestdata(t, tt.file), LuaOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(items); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q\nwant %q", got, tt.want)
			}
			for _, it := range items {
				if it.Event.User != "alice@example.com" || it.Event.Source != events.SourceDovecotLua {
					t.Fatalf("event = %+v", it.Event)
				}
			}
		})
	}
}

func TestParseLua(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"empty transaction", `{"user":"u","txn":"t"}`, []string{}},
		{"only counts", `{"user":"u","txn":"t","unseen":{"Work":1,"INBOX":4}}`, []string{
			"snapshot INBOX unread=4 count=0 t/s0", "snapshot Work unread=1 count=0 t/s1"}},
		{"inbox in any case", `{"user":"u","txn":"t","events":[{"event":"MessageNew","mailbox":"inbox","uid":1}],"unseen":{"INBOX":1}}`,
			[]string{"new inbox unread=1 count=0 t/0"}},
		{"flag changes", `{"user":"u","txn":"t","events":[
			{"event":"FlagsSet","flags":["\\Flagged"]},
			{"event":"FlagsSet","keywords":1},
			{"event":"FlagsSet","flags":["\\Seen","\\Deleted","\\Recent"]},
			{"event":"FlagsClear","flags":["\\Answered"]},
			{"event":"FlagsClear"},
			{"event":"MailboxCreate","mailbox":"New"}]}`,
			[]string{"flags  unread=- count=0 t/0", "flags  unread=- count=0 t/1", "flags  unread=- count=0 t/3"}},
		{"unknown event", `{"user":"u","txn":"t","events":[{"event":"MessageNew","uid":1},{"event":"MessageExploded"}]}`,
			[]string{"new  unread=- count=0 t/0", `error events[1].event: unknown Dovecot event "MessageExploded"`}},
		{"event field type", `{"user":"u","txn":"t","events":[{"event":"MessageNew","uid":"1"}]}`,
			[]string{"error events[0].uid: must be an integer from 0 to 4294967295, got string"}},
		{"event unknown field", `{"user":"u","txn":"t","events":[{"event":"MessageNew","subject":"hi"}]}`,
			[]string{"error events[0].subject: unknown field (known fields: event, mailbox, uidvalidity, uid, flags, keywords, count)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, err := ParseLua([]byte(tt.body), LuaOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(items); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		name   string
		parse  func([]byte) ([]sources.Item, error)
		body   string
		status int
		field  string
	}{
		{"ox syntax", ParseOX, `{"user":`, 400, ""},
		{"ox array", ParseOX, `[{"user":"u"}]`, 400, ""},
		{"ox null", ParseOX, `null`, 400, ""},
		{"lua syntax", luaDefault, `{`, 400, ""},
		{"lua no txn", luaDefault, `{"user":"u","events":[]}`, 422, "txn"},
		{"lua version", luaDefault, `{"v":2,"user":"u","txn":"t"}`, 422, "v"},
		{"lua unknown field", luaDefault, `{"user":"u","txn":"t","subject":"x"}`, 422, "subject"},
		{"lua unseen type", luaDefault, `{"user":"u","txn":"t","unseen":{"INBOX":"1"}}`, 422, "unseen"},
		{"lua long txn", luaDefault, `{"user":"u","txn":"` + strings.Repeat("t", MaxTxnLen+1) + `"}`, 422, "txn"},
		{"lua too many", func(b []byte) ([]sources.Item, error) { return ParseLua(b, LuaOptions{MaxEvents: 1}) },
			`{"user":"u","txn":"t","events":[{"event":"MessageNew"}],"unseen":{"INBOX":1}}`, 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.parse([]byte(tt.body))
			var se *httpjson.Error
			var ve *events.ValidationError
			switch {
			case errors.As(err, &se):
				if se.Status != tt.status {
					t.Fatalf("status %d (%v), want %d", se.Status, se, tt.status)
				}
			case errors.As(err, &ve):
				if tt.status != 422 || ve.Field != tt.field {
					t.Fatalf("validation error %v, want status %d field %q", ve, tt.status, tt.field)
				}
			default:
				t.Fatalf("err = %v, want a request-level error", err)
			}
		})
	}
}

func luaDefault(b []byte) ([]sources.Item, error) { return ParseLua(b, LuaOptions{}) }
