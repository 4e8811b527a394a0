package native

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
)

const good = `{"v":1,"tenant":"fabrikam.com","user":"alice@fabrikam.com","kind":"new","unread":3,"change_id":"c1","occurred_at":"2025-01-31T09:30:00+01:00"}`

func TestParseShapes(t *testing.T) {
	tests := []struct {
		name, media, body string
		want              int
	}{
		{"single", MediaJSON, good, 1},
		{"single with spaces", MediaJSON, "\n  " + good + "\n", 1},
		{"array", MediaJSON, "[" + good + "," + good + "]", 2},
		{"array with spaces after", MediaJSON, "[" + good + "] \t\r\n", 1},
		{"ndjson", MediaNDJSON, good + "\n\n" + good + "\r\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, err := Parse([]byte(tt.body), tt.media, Options{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(items) != tt.want {
				t.Fatalf("got %d items, want %d", len(items), tt.want)
			}
			for _, it := range items {
				if it.Err != nil {
					t.Fatalf("item error: %v", it.Err)
				}
				e := it.Event
				if e.User != "alice@fabrikam.com" || e.Kind != events.KindNew || *e.Unread != 3 || e.ChangeID != "c1" || e.Source != events.SourceNative {
					t.Fatalf("event = %+v", e)
				}
				if want := time.Date(2025, 1, 31, 8, 30, 0, 0, time.UTC); !e.OccurredAt.Equal(want) || e.OccurredAt.Location() != time.UTC {
					t.Fatalf("occurred_at = %v, want %v in UTC", e.OccurredAt, want)
				}
			}
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		name, media, body string
		status            int
		message           string
	}{
		{"syntax", MediaJSON, `{"user":`, 400, "not valid JSON"},
		{"array syntax", MediaJSON, `[{"user":"a"},]`, 400, "not valid JSON (at byte 14)"},
		{"trailing data", MediaJSON, good + good, 400, "unexpected data after the events"},
		{"trailing data after spaces", MediaJSON, good + "\n x", 400, "not valid JSON (at byte 144): unexpected data after the events"},
		{"array trailing data", MediaJSON, "[" + good + "]]", 400, "not valid JSON"},
		{"truncated", MediaNDJSON, good + "\n" + `{"user":"a"`, 400, "line 2"},
		{"empty", MediaJSON, "  ", 400, "empty body"},
		{"empty array", MediaJSON, "[]", 400, "no event"},
		{"ndjson bad line", MediaNDJSON, good + "\n{oops}\n", 400, "line 2"},
		{"ndjson data after the events", MediaNDJSON, good + "\n\n]", 400, "line 3 is not valid JSON: unexpected data after the events"},
		{"too many", MediaJSON, "[" + strings.Repeat(good+",", 3) + good + "]", 413, "more than 3 events"},
		{"too many ndjson", MediaNDJSON, strings.Repeat(good+"\n", 5), 413, "more than 3 events"},
		{"media", "text/plain", good, 400, "unsupported media type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.body), tt.media, Options{MaxEvents: 3})
			var se *httpjson.Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *httpjson.Error", err)
			}
			if se.Status != tt.status || !strings.Contains(se.Message, tt.message) {
				t.Fatalf("got %d %q, want %d containing %q", se.Status, se.Message, tt.status, tt.message)
			}
		})
	}
}

func TestParseFieldErrors(t *testing.T) {
	tests := []struct {
		name, body, field, reason string
	}{
		{"unknown field", `{"user":"a@b.c","subject":"hi"}`, "subject", "unknown field"},
		{"source is ingest's", `{"user":"a@b.c","source":"ews"}`, "source", "unknown field"},
		{"string for int", `{"unread":"3"}`, "unread", "must be an integer, got string"},
		{"negative uid", `{"uid":-1}`, "uid", "must be an integer from 0 to 4294967295, got number -1"},
		{"fraction", `{"count":1.5}`, "count", "must be an integer, got number 1.5"},
		{"number for string", `{"user":42}`, "user", "must be a string, got number"},
		{"bad time", `{"occurred_at":"yesterday"}`, "occurred_at", "RFC 3339"},
		{"not an object", `"hello"`, "", "must be an object, got string"},
		{"null", `null`, "", "must be a JSON object, got null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, err := Parse([]byte("["+tt.body+"]"), MediaJSON, Options{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var ve *events.ValidationError
			if !errors.As(items[0].Err, &ve) {
				t.Fatalf("item error = %v, want a validation error", items[0].Err)
			}
			if ve.Field != tt.field || !strings.Contains(ve.Reason, tt.reason) {
				t.Fatalf("got field %q reason %q, want %q containing %q", ve.Field, ve.Reason, tt.field, tt.reason)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	items, err := Parse([]byte(`{"user":"bob","kind":"read","uidvalidity":7,"uid":9}`), MediaJSON, Options{})
	if err != nil || items[0].Err != nil {
		t.Fatalf("Parse: %v %v", err, items[0].Err)
	}
	e := items[0].Event
	if e.Version != events.SchemaVersion || e.Tenant != "" || !e.OccurredAt.IsZero() || e.UID != 9 || e.UIDValidity != 7 {
		t.Fatalf("event = %+v; want version 1, no tenant and no time (ingest fills them)", e)
	}
}

// BenchmarkParseOne is one event in a JSON body ending with a newline,
// as mail servers send them: one per request.
func BenchmarkParseOne(b *testing.B) {
	body := []byte(good + "\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(body, MediaJSON, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
