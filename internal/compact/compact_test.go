package compact_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/compact"
)

func TestSniff(t *testing.T) {
	tests := []struct {
		name    string
		value   []byte
		want    byte
		wantErr error
	}{
		{"JSON", []byte(`{"count":1}`), 0, nil},
		{"JSON after whitespace", []byte(" \t\r\n{}"), 0, nil},
		{"empty", nil, 0, nil},
		{"version 1", []byte{compact.Version1, 0}, compact.Version1, nil},
		{"a later version", []byte{0x02, 0}, 0, compact.ErrVersion},
		{"garbage is left to JSON", []byte("x"), 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := compact.Sniff(tt.value)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Sniff = %d, %v; want %d, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestTimeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
		size int
	}{
		{"a millisecond", time.Date(2026, 2, 3, 4, 5, 6, 7_000_000, time.UTC), 6},
		{"a nanosecond", time.Date(2026, 2, 3, 4, 5, 6, 7_000_001, time.UTC), 7},
		{"the most nanoseconds within a millisecond", time.Date(2026, 2, 3, 4, 5, 6, 999_999_999, time.UTC), 9},
		{"the compact epoch", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), 1},
		{"just before it", time.Date(2019, 12, 31, 23, 59, 59, 999_999_999, time.UTC), 4},
		{"the Unix epoch", time.Unix(0, 0), 7},
		{"the last millisecond in 6 bytes", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Add((1<<40 - 1) * time.Millisecond), 6},
		{"year 0", time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), 7},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC), 11},
		{"another zone", time.Date(2026, 2, 3, 4, 5, 6, 0, time.FixedZone("CET", 3600)), 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := compact.AppendTime(nil, tt.t)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.size {
				t.Errorf("%d bytes, want %d", len(b), tt.size)
			}
			r := compact.NewReader(b)
			got, err := r.Time("time")
			if err != nil || r.End() != nil {
				t.Fatalf("Time = %v, %v; end %v", got, err, r.End())
			}
			if !got.Equal(tt.t) || got.Location() != time.UTC {
				t.Fatalf("read %v, want %v in UTC", got, tt.t)
			}
		})
	}
	for _, bad := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC)} {
		if _, err := compact.AppendTime(nil, bad); err == nil {
			t.Errorf("AppendTime(%v) succeeded; JSON cannot write that year", bad)
		}
	}
}

func TestIntAndBytes(t *testing.T) {
	var b []byte
	for _, n := range []int{0, -1, 1, math.MaxInt, math.MinInt} {
		b = compact.AppendInt(b, n)
	}
	b = compact.AppendString(b, "")
	b = compact.AppendBytes(b, []byte{0, 0xff})
	r := compact.NewReader(b)
	for _, want := range []int{0, -1, 1, math.MaxInt, math.MinInt} {
		if got, err := r.Int("n"); err != nil || got != want {
			t.Fatalf("Int = %d, %v; want %d", got, err, want)
		}
	}
	if s, err := r.String("s"); err != nil || s != "" {
		t.Fatalf("String = %q, %v", s, err)
	}
	if p, err := r.Bytes("p"); err != nil || string(p) != "\x00\xff" {
		t.Fatalf("Bytes = %q, %v", p, err)
	}
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
}

// TestReaderErrors: bytes that are not what a reader expects give an
// error matching ErrCorrupt, never a panic or a wrong value.
func TestReaderErrors(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		read func(*compact.Reader) error
	}{
		{"no byte", nil, func(r *compact.Reader) error { _, err := r.Byte("b"); return err }},
		{"no varint", nil, func(r *compact.Reader) error { _, err := r.Uvarint("u"); return err }},
		{"a varint cut short", []byte{0x80}, func(r *compact.Reader) error { _, err := r.Uvarint("u"); return err }},
		{"a varint longer than 64 bits", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, func(r *compact.Reader) error { _, err := r.Uvarint("u"); return err }},
		{"a varint not in its shortest form", []byte{0x81, 0x00}, func(r *compact.Reader) error { _, err := r.Uvarint("u"); return err }},
		{"bytes beyond the end", []byte{3, 'a'}, func(r *compact.Reader) error { _, err := r.Bytes("p"); return err }},
		{"a huge length", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, func(r *compact.Reader) error { _, err := r.Bytes("p"); return err }},
		{"zero nanoseconds flagged", []byte{0x01, 0x00}, func(r *compact.Reader) error { _, err := r.Time("t"); return err }},
		{"a millisecond's worth of nanoseconds", []byte{0x01, 0xc0, 0x84, 0x3d}, func(r *compact.Reader) error { _, err := r.Time("t"); return err }},
		{"nanoseconds missing", []byte{0x01}, func(r *compact.Reader) error { _, err := r.Time("t"); return err }},
		{"a year beyond 9999", []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, func(r *compact.Reader) error { _, err := r.Time("t"); return err }},
		{"bytes left over", []byte{0}, func(r *compact.Reader) error { return r.End() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.read(compact.NewReader(tt.data)); !errors.Is(err, compact.ErrCorrupt) {
				t.Fatalf("read = %v, want ErrCorrupt", err)
			}
		})
	}
}
