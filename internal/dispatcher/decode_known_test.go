package dispatcher

import (
	"github.com/pushproxy/pushproxy/internal/events"

	"reflect"
	"testing"
)

// TestDecodeEventKnownMatchesDecodeEvent checks that the strings a worker
// offers to save allocations never change what is decoded, whether they
// match the event's or not.
func TestDecodeEventKnownMatchesDecodeEvent(t *testing.T) {
	knowns := []knownStrings{
		{},
		{tenant: "fabrikam.com", user: "alice@fabrikam.com"},
		{tenant: "fabrikam.com", user: "bob@fabrikam.com"},
		{tenant: "contoso.com", user: "a@b.c"},
	}
	// One validator for all seeds, as a worker keeps one: what it remembers
	// of earlier events must not change the result.
	var v events.Validator
	for _, data := range decodeSeeds(t) {
		want, wantErr := decodeEvent(data)
		for _, known := range knowns {
			got, gotErr := decodeEventKnown(data, known, &v)
			if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
				t.Fatalf("%q with %+v: error %v, want %v", data, known, gotErr, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%q with %+v:\n got %+v\nwant %+v", data, known, got, want)
			}
		}
	}
}
