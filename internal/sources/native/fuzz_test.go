package native

import (
	"errors"
	"reflect"
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

// FuzzParseFast checks the fast path against the library path: for any
// body it accepts, encoding/json gives the same items (events, and the
// validation errors of w.event). Seeds: testdata/fuzz/FuzzParseFast.
func FuzzParseFast(f *testing.F) {
	f.Add([]byte(good), false)
	f.Add([]byte(good+"\n"+good+"\n"), true)
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		const max = 5
		fast, ok := parseFast(body, ndjson, max)
		if !ok {
			return
		}
		lib, err := parseLibrary(body, ndjson, max)
		if err != nil {
			t.Fatalf("the fast path took %q, the library refuses it: %v", body, err)
		}
		if !reflect.DeepEqual(fast, lib) {
			t.Fatalf("%q:\nfast    %+v\nlibrary %+v", body, fast, lib)
		}
	})
}
