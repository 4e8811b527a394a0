// Package compact has the building blocks of the compact encodings of the
// values of the unread and subscriptions buckets (unread.Encode,
// subscriptions.Encode): the version byte that tells a compact value from
// JSON, varints, length-prefixed bytes and times, appended to a byte
// slice, and a Reader that reads them back and fails, never panics, on
// bytes that are not what it expects.
//
// A compact value starts with its version byte, a control character that
// never starts JSON (JSON starts with '{' or whitespace), so a reader
// tells the two apart by the first byte and reads both.
package compact

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version1 is the first byte of a value in the first compact encoding.
const Version1 byte = 0x01

// ErrVersion is returned by Sniff for a value of a compact version this
// release does not know.
var ErrVersion = errors.New("unknown compact encoding version")

// ErrCorrupt is wrapped by every error of a Reader about bytes that are
// not a valid value.
var ErrCorrupt = errors.New("corrupt compact value")

// Sniff tells how value is encoded by its first byte: Version1 for the
// first compact encoding, 0 for anything else, which the caller reads as
// JSON. A first byte that is a control character other than JSON's
// whitespace is a compact version this release does not know: an error
// matching ErrVersion.
func Sniff(value []byte) (byte, error) {
	if len(value) == 0 {
		return 0, nil
	}
	switch b := value[0]; {
	case b == Version1:
		return b, nil
	case b < 0x20 && b != '\t' && b != '\n' && b != '\r':
		return 0, fmt.Errorf("%w %d", ErrVersion, b)
	default:
		return 0, nil
	}
}

// Decode reads a value in either encoding, told apart by Sniff: JSON
// into a T, or the fields after the version byte of the first compact
// encoding with version1.
func Decode[T any](data []byte, version1 func(*Reader) (T, error)) (T, error) {
	var zero T
	version, err := Sniff(data)
	if err != nil {
		return zero, err
	}
	if version == 0 {
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			return zero, err
		}
		return v, nil
	}
	return version1(NewReader(data[1:]))
}

// AppendBytes appends p with its length before it.
func AppendBytes(b, p []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(p))), p...)
}

// AppendString appends s with its length before it.
func AppendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// AppendInt appends n as a signed varint.
func AppendInt(b []byte, n int) []byte { return binary.AppendVarint(b, int64(n)) }

// epochMilli is the time compact times count from, 2020-01-01T00:00:00Z,
// in milliseconds since the Unix epoch.
const epochMilli int64 = 1_577_836_800_000

// The times a compact time may hold: what encoding/json writes of a time
// in UTC, 0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, in
// milliseconds since epochMilli.
const (
	minMilli int64 = -62_167_219_200_000 - epochMilli
	maxMilli int64 = 253_402_300_799_999 - epochMilli
)

// nanosPerMilli splits a time into milliseconds and the nanoseconds within.
const nanosPerMilli = int64(time.Millisecond)

// AppendTime appends t (which must not be zero: callers keep whether a
// time is present apart) as the milliseconds since 2020 (epochMilli),
// zigzagged and shifted left by one, with the low bit set when the
// nanoseconds within the millisecond follow (as an unsigned varint, 1 to
// 999,999): 6 bytes for a time to the millisecond until 2054. A time
// keeps its instant to the nanosecond, not its location: it is read back
// in UTC (encoding/json keeps the offset as text; no reader of these
// values looks at it). Like encoding/json for a time in UTC, it refuses
// years outside 0 to 9999.
func AppendTime(b []byte, t time.Time) ([]byte, error) {
	ms := t.UnixMilli() - epochMilli
	if y := t.UTC().Year(); y < 0 || y > 9999 || ms < minMilli || ms > maxMilli {
		return b, fmt.Errorf("time %s: year outside 0 to 9999", t.UTC().Format(time.RFC3339Nano))
	}
	sub := int64(t.Nanosecond()) % nanosPerMilli
	head := zigzag(ms) << 1
	if sub == 0 {
		return binary.AppendUvarint(b, head), nil
	}
	return binary.AppendUvarint(binary.AppendUvarint(b, head|1), uint64(sub)), nil
}

// zigzag maps a signed number to an unsigned one, small magnitudes to
// small numbers, as binary.AppendVarint does.
func zigzag(n int64) uint64 { return uint64(n<<1) ^ uint64(n>>63) }

// unzigzag undoes zigzag.
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// Reader reads a compact value. Its methods return ErrCorrupt (wrapped,
// with what was being read) when the bytes end early or hold something
// else than expected; it never panics.
type Reader struct {
	data []byte
	off  int
}

// NewReader reads data.
func NewReader(data []byte) *Reader { return &Reader{data: data} }

func (r *Reader) corrupt(what, format string, args ...any) error {
	return fmt.Errorf("%w: %s at byte %d: %s", ErrCorrupt, what, r.off, fmt.Sprintf(format, args...))
}

// Byte reads one byte.
func (r *Reader) Byte(what string) (byte, error) {
	if r.off >= len(r.data) {
		return 0, r.corrupt(what, "the value ends")
	}
	b := r.data[r.off]
	r.off++
	return b, nil
}

// Uvarint reads an unsigned varint in its shortest form.
func (r *Reader) Uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(r.data[r.off:])
	switch {
	case n == 0:
		return 0, r.corrupt(what, "the value ends")
	case n < 0:
		return 0, r.corrupt(what, "a varint longer than 64 bits")
	case n != len(binary.AppendUvarint(nil, v)):
		return 0, r.corrupt(what, "a varint not in its shortest form")
	}
	r.off += n
	return v, nil
}

// Int reads a signed varint (AppendInt) that fits an int.
func (r *Reader) Int(what string) (int, error) {
	u, err := r.Uvarint(what)
	if err != nil {
		return 0, err
	}
	v := unzigzag(u)
	if int64(int(v)) != v {
		return 0, r.corrupt(what, "%d does not fit an int", v)
	}
	return int(v), nil
}

// Bytes reads bytes with their length before them (AppendBytes). The
// result shares the reader's data.
func (r *Reader) Bytes(what string) ([]byte, error) {
	n, err := r.Uvarint(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.data)-r.off) {
		return nil, r.corrupt(what, "a length of %d beyond the value's end", n)
	}
	p := r.data[r.off : r.off+int(n)]
	r.off += int(n)
	return p, nil
}

// String reads a string with its length before it (AppendString).
func (r *Reader) String(what string) (string, error) {
	p, err := r.Bytes(what)
	return string(p), err
}

// Time reads a time written by AppendTime, in UTC.
func (r *Reader) Time(what string) (time.Time, error) {
	head, err := r.Uvarint(what)
	if err != nil {
		return time.Time{}, err
	}
	ms := unzigzag(head >> 1)
	if ms < minMilli || ms > maxMilli {
		return time.Time{}, r.corrupt(what, "%d ms from the epoch, beyond the years 0 to 9999", ms)
	}
	t := time.UnixMilli(epochMilli + ms)
	if head&1 == 1 {
		sub, err := r.Uvarint(what)
		if err != nil {
			return time.Time{}, err
		}
		if sub == 0 || sub >= uint64(nanosPerMilli) {
			return time.Time{}, r.corrupt(what, "%d nanoseconds within a millisecond", sub)
		}
		t = t.Add(time.Duration(sub))
	}
	return t.UTC(), nil
}

// End checks that every byte was read.
func (r *Reader) End() error {
	if r.off != len(r.data) {
		return r.corrupt("the end", "%d bytes left over", len(r.data)-r.off)
	}
	return nil
}
