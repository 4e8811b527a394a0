// Package jsonscan reads the plain JSON that pushproxy's own writers and
// usual clients produce (ASCII strings without escapes, integers, RFC 3339
// times) without reflection, for the decoders' fast paths. Every method
// reports false at anything else, and the caller then hands the whole
// input to encoding/json, which decodes or explains it; each fast path is
// fuzzed against its library decoder.
package jsonscan

import (
	"math"
	"time"
)

// Scanner reads JSON from a byte slice, one token at a time.
type Scanner struct {
	data []byte
	i    int
}

// New returns a Scanner at the start of data (a value: keep it in a
// variable, the methods take its address).
func New(data []byte) Scanner { return Scanner{data: data} }

// Space skips JSON white space.
func (s *Scanner) Space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// Peek reports whether the next byte is c.
func (s *Scanner) Peek(c byte) bool { return s.i < len(s.data) && s.data[s.i] == c }

// Eat reads c if it is the next byte.
func (s *Scanner) Eat(c byte) bool {
	if s.Peek(c) {
		s.i++
		return true
	}
	return false
}

// Done reports whether the whole input was read.
func (s *Scanner) Done() bool { return s.i == len(s.data) }

// End reports whether only white space is left.
func (s *Scanner) End() bool {
	s.Space()
	return s.Done()
}

// Object reads a flat object: for each member, its key (a Raw string) and
// the colon, then value, which reads the member's value and reports false
// at anything it does not take. It reports false at once then.
func (s *Scanner) Object(value func(key []byte) bool) bool {
	if !s.Eat('{') {
		return false
	}
	s.Space()
	if s.Eat('}') {
		return true
	}
	for {
		s.Space()
		key, ok := s.Raw()
		if !ok {
			return false
		}
		s.Space()
		if !s.Eat(':') {
			return false
		}
		s.Space()
		if !value(key) {
			return false
		}
		s.Space()
		switch {
		case s.Eat(','):
		case s.Eat('}'):
			return true
		default:
			return false
		}
	}
}

// Null reads null if it is next.
func (s *Scanner) Null() bool {
	if len(s.data)-s.i >= 4 && string(s.data[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// Raw reads a string of printable ASCII without escapes and returns its
// bytes, quotes excluded.
func (s *Scanner) Raw() ([]byte, bool) {
	if !s.Eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			b := s.data[start:s.i]
			s.i++
			return b, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// StringInto reads a string (Raw) into dst.
func (s *Scanner) StringInto(dst *string) bool {
	b, ok := s.Raw()
	*dst = string(b)
	return ok
}

// KnownString is StringInto that stores known, without allocating, when
// the string read is the same text.
func (s *Scanner) KnownString(dst *string, known string) bool {
	b, ok := s.Raw()
	if ok && known != "" && string(b) == known {
		*dst = known
		return true
	}
	*dst = string(b)
	return ok
}

// MaxDigits keeps the integers read here far from overflow; longer ones
// are left to encoding/json.
const MaxDigits = 15

// Number reads a JSON integer (no fraction, no exponent, no leading zero)
// of at most MaxDigits digits, followed by white space, a comma, a closing
// brace or the end.
func (s *Scanner) Number() (n int64, neg, ok bool) {
	neg = s.Eat('-')
	digits := s.i
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		n = n*10 + int64(s.data[s.i]-'0')
		s.i++
	}
	count := s.i - digits
	if count == 0 || count > MaxDigits || (count > 1 && s.data[digits] == '0') {
		return 0, neg, false
	}
	if s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r', ',', '}':
		default:
			return 0, neg, false
		}
	}
	if neg {
		n = -n
	}
	return n, neg, true
}

// IntInto reads an integer (Number) into dst.
func (s *Scanner) IntInto(dst *int) bool {
	n, _, ok := s.Number()
	*dst = int(n)
	return ok
}

// Uint32Into reads an unsigned 32-bit integer into dst; it refuses any
// minus sign, even "-0", as encoding/json does.
func (s *Scanner) Uint32Into(dst *uint32) bool {
	n, neg, ok := s.Number()
	if !ok || neg || n > math.MaxUint32 {
		return false
	}
	*dst = uint32(n)
	return true
}

// TimeInto reads a quoted time the way encoding/json does, with
// time.Time's own UnmarshalJSON.
func (s *Scanner) TimeInto(dst *time.Time) bool {
	start := s.i
	if _, ok := s.Raw(); !ok {
		return false
	}
	return dst.UnmarshalJSON(s.data[start:s.i]) == nil
}
