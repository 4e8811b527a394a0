package unread_test

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/compact"
	"github.com/pushproxy/pushproxy/internal/storage"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// inUTC is st with its times in UTC: the compact encoding keeps a time's
// instant, not its location (no reader looks at it).
func inUTC(st unread.State) unread.State {
	st.LastEventAt, st.LastPushedAt = st.LastEventAt.UTC(), st.LastPushedAt.UTC()
	return st
}

// TestEncodingRoundTrip: the compact encoding gives back exactly what JSON
// gives back, in fewer bytes.
func TestEncodingRoundTrip(t *testing.T) {
	three, zero, negative := 3, 0, -2
	tests := []struct {
		name string
		st   unread.State
	}{
		{"zero", unread.State{}},
		{"a first count", unread.State{Count: 1, Exact: true, LastSeq: 1, LastEventAt: when}},
		{"pushed", unread.State{Count: 3, Exact: true, LastSeq: 48_211_907, LastEventAt: when.Add(123_456_789),
			LastPushedCount: &three, LastPushedAt: when.Add(2 * time.Second), LastPushedSeq: 48_211_900}},
		{"a zero count pushed", unread.State{LastSeq: 9, LastPushedCount: &zero, LastPushedAt: when, LastPushedSeq: 9}},
		{"pushed at the local time of a dispatcher", unread.State{Count: 1, LastPushedCount: &three, LastPushedAt: time.Now()}},
		{"an offset", unread.State{LastEventAt: when.In(time.FixedZone("", -7*3600))}},
		{"the extremes", unread.State{Count: math.MaxInt, LastSeq: math.MaxUint64, LastPushedCount: &negative, LastPushedSeq: math.MaxUint64 - 1,
			LastEventAt: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), LastPushedAt: time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)}},
		{"a negative count", unread.State{Count: math.MinInt}},
		{"before 1970", unread.State{LastEventAt: time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asJSON, err := unread.Encode(tt.st, storage.JSON)
			if err != nil {
				t.Fatal(err)
			}
			fromJSON, err := unread.Decode(asJSON)
			if err != nil {
				t.Fatal(err)
			}
			packed, err := unread.Encode(tt.st, storage.Compact)
			if err != nil {
				t.Fatal(err)
			}
			if packed[0] != compact.Version1 || asJSON[0] != '{' {
				t.Fatalf("first bytes %#x and %q, want the version and '{'", packed[0], asJSON[0])
			}
			fromCompact, err := unread.Decode(packed)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(inUTC(fromJSON), fromCompact) {
				t.Fatalf("compact gives back\n%+v\nJSON gives back\n%+v", fromCompact, inUTC(fromJSON))
			}
			if len(packed) >= len(asJSON) {
				t.Errorf("compact %d bytes, JSON %d", len(packed), len(asJSON))
			}
		})
	}
}

// TestEncodingSize: a state after a push fits in about 30 bytes.
func TestEncodingSize(t *testing.T) {
	pushed := 4
	now := time.Date(2026, 5, 6, 7, 8, 9, 123_456_789, time.UTC)
	st := unread.State{Count: 4, Exact: true, LastSeq: 12_345_678, LastEventAt: now.Truncate(time.Second), LastPushedCount: &pushed,
		LastPushedAt: now.Add(time.Second), LastPushedSeq: 12_345_678}
	packed, err := unread.Encode(st, storage.Compact)
	if err != nil {
		t.Fatal(err)
	}
	asJSON, err := unread.Encode(st, storage.JSON)
	if err != nil {
		t.Fatal(err)
	}
	// version, flags, count, 2 sequences of 4 bytes, a time of 6 and one
	// of 6+3, a count.
	if len(packed) != 1+1+1+4+6+1+9+4 {
		t.Errorf("compact state of %d bytes (JSON %d): %x", len(packed), len(asJSON), packed)
	}
}

// TestDecodeErrors: what is neither a compact state nor JSON gives an
// error.
func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"empty", nil, nil},
		{"not JSON", []byte("{"), nil},
		{"a later version", []byte{0x02, 0, 0, 0, 0}, compact.ErrVersion},
		{"only the version", []byte{compact.Version1}, compact.ErrCorrupt},
		{"unknown flags", []byte{compact.Version1, 0x10, 0, 0, 0}, compact.ErrCorrupt},
		{"cut short", []byte{compact.Version1, 0, 0, 0}, compact.ErrCorrupt},
		{"a time missing", []byte{compact.Version1, 0x02, 0, 0, 0}, compact.ErrCorrupt},
		{"left over", []byte{compact.Version1, 0, 0, 0, 0, 0}, compact.ErrCorrupt},
		{"an overlong varint", []byte{compact.Version1, 0, 0x80, 0x00, 0, 0}, compact.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := unread.Decode(tt.data)
			if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode = %+v, %v; want an error matching %v", st, err, tt.wantErr)
			}
		})
	}
}

// inJSONRange reports whether every time of st is one JSON can write in
// UTC (years 0 to 9999); an offset lets JSON read instants just outside.
func inJSONRange(st unread.State) bool {
	for _, at := range []time.Time{st.LastEventAt, st.LastPushedAt} {
		if y := at.UTC().Year(); !at.IsZero() && (y < 0 || y > 9999) {
			return false
		}
	}
	return true
}

// FuzzDecodeState: Decode never panics; whatever it reads, both encodings
// write and give back unchanged; a compact value has one form; and a JSON
// value read through the compact encoding is what JSON reads.
func FuzzDecodeState(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := unread.Decode(data)
		if err != nil {
			return
		}
		if !inJSONRange(st) {
			if _, err := unread.Encode(st, storage.Compact); err == nil {
				t.Fatalf("a time beyond the years 0 to 9999 encoded: %+v", st)
			}
			return
		}
		for _, enc := range []storage.Encoding{storage.JSON, storage.Compact} {
			b, err := unread.Encode(st, enc)
			if err != nil {
				t.Fatalf("%s: Encode(%+v): %v", enc, st, err)
			}
			back, err := unread.Decode(b)
			if err != nil {
				t.Fatalf("%s: Decode(Encode(%+v)) = %v", enc, st, err)
			}
			if !reflect.DeepEqual(inUTC(back), inUTC(st)) {
				t.Fatalf("%s: read %+v, gives back %+v", enc, st, back)
			}
			if enc == storage.Compact && data[0] == compact.Version1 && string(b) != string(data) {
				t.Fatalf("%x is read as %+v, which encodes as %x", data, st, b)
			}
		}
	})
}
