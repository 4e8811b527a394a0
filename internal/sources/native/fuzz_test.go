package native

import (
	"errors"
	"testing"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
)

// FuzzNative checks that any body either fails as a request with a 4xx
// error or gives at most MaxEvents items, each an event or a validation
// error, and that a parsed event survives Normalize and Validate.
// Seeds: testdata/fuzz/FuzzNative.
func FuzzNative(f *testing.F) {
	f.Add([]byte(good), false)
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		media := MediaJSON
		if ndjson {
			media = MediaNDJSON
		}
		items, err := Parse(body, media, Options{MaxEvents: 5})
		if err != nil {
			var se *httpjson.Error
			if !errors.As(err, &se) || se.Status < 400 || se.Status > 499 {
				t.Fatalf("request error %v is not a 4xx httpjson.Error", err)
			}
			return
		}
		if len(items) == 0 || len(items) > 5 {
			t.Fatalf("%d items", len(items))
		}
		for _, it := range items {
			if it.Err != nil {
				var ve *events.ValidationError
				if !errors.As(it.Err, &ve) {
					t.Fatalf("item error %v is not a validation error", it.Err)
				}
				continue
			}
			e := it.Event
			e.Normalize()
			_ = e.Validate()
		}
	})
}
