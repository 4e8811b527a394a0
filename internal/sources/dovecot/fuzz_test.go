package dovecot

import (
	"errors"
	"testing"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// checkItems fails unless err is a request-level error (a 4xx
// httpjson.Error or a validation error) or every item is an event of source
// or a validation error, with distinct change ids, that survives Normalize
// and Validate.
func checkItems(t *testing.T, items []sources.Item, err error, source events.Source) {
	var se *httpjson.Error
	var ve *events.ValidationError
	switch {
	case errors.As(err, &se):
		if se.Status < 400 || se.Status > 499 {
			t.Fatalf("request error status %d", se.Status)
		}
		return
	case errors.As(err, &ve):
		return
	case err != nil:
		t.Fatalf("unexpected error type %T: %v", err, err)
	}
	ids := map[string]bool{}
	for _, it := range items {
		if it.Err != nil {
			if !errors.As(it.Err, &ve) {
				t.Fatalf("item error %v is not a validation error", it.Err)
			}
			continue
		}
		e := it.Event
		if e.Source != source {
			t.Fatalf("source %q, want %q", e.Source, source)
		}
		if ids[e.ChangeID] {
			t.Fatalf("change id %q repeated", e.ChangeID)
		}
		ids[e.ChangeID] = true
		e.Normalize()
		_ = e.Validate()
	}
}

// FuzzDovecotOX parses arbitrary OX driver bodies. Seeds: testdata/fuzz/FuzzDovecotOX.
func FuzzDovecotOX(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := ParseOX(body)
		checkItems(t, items, err, events.SourceDovecotOX)
		if err == nil && len(items) != 1 {
			t.Fatalf("%d items from one notification", len(items))
		}
	})
}

// FuzzDovecotLua parses arbitrary Lua script bodies. Seeds: testdata/fuzz/FuzzDovecotLua.
func FuzzDovecotLua(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := ParseLua(body, LuaOptions{MaxEvents: 20})
		checkItems(t, items, err, events.SourceDovecotLua)
		if len(items) > 20 {
			t.Fatalf("%d items over the limit of 20", len(items))
		}
	})
}
