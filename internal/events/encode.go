package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Encode returns the JSON form of the event for the stream.
func (e *Event) Encode() ([]byte, error) {
	return e.AppendEncode(make([]byte, 0, encodedSizeHint))
}

// encodedSizeHint is the room a typical encoded event needs.
const encodedSizeHint = 320

// AppendEncode appends the JSON form of the event (what Encode returns) to
// dst. On error dst is returned unchanged.
//
// The output is exactly what encoding/json makes of an Event: the same
// fields in the same order, the same omissions and the same string escapes
// (HTML characters, invalid UTF-8, U+2028 and U+2029 included), written
// without reflection.
func (e *Event) AppendEncode(dst []byte) ([]byte, error) {
	n0 := len(dst)
	b := append(dst, `{"v":`...)
	b = strconv.AppendInt(b, int64(e.Version), 10)
	b = appendField(b, "tenant", e.Tenant)
	b = appendField(b, "user", e.User)
	b = appendField(b, "mailbox", e.Mailbox)
	if e.FromMailbox != "" {
		b = appendField(b, "from_mailbox", e.FromMailbox)
	}
	b = appendField(b, "kind", string(e.Kind))
	if e.Unread != nil {
		b = append(b, `,"unread":`...)
		b = strconv.AppendInt(b, int64(*e.Unread), 10)
	}
	if e.Count != 0 {
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, int64(e.Count), 10)
	}
	if e.ChangeID != "" {
		b = appendField(b, "change_id", e.ChangeID)
	}
	if e.UIDValidity != 0 {
		b = append(b, `,"uidvalidity":`...)
		b = strconv.AppendUint(b, uint64(e.UIDValidity), 10)
	}
	if e.UID != 0 {
		b = append(b, `,"uid":`...)
		b = strconv.AppendUint(b, uint64(e.UID), 10)
	}
	var ok bool
	if b, ok = appendTime(b, "occurred_at", e.OccurredAt); !ok {
		return e.appendSlow(dst[:n0])
	}
	b = appendField(b, "source", string(e.Source))
	if !e.ReceivedAt.IsZero() {
		if b, ok = appendTime(b, "received_at", e.ReceivedAt); !ok {
			return e.appendSlow(dst[:n0])
		}
	}
	return append(b, '}'), nil
}

// appendSlow encodes with encoding/json, for the times that it refuses
// (years outside 0 to 9999), so that the error is the one it gives.
func (e *Event) appendSlow(dst []byte) ([]byte, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return dst, fmt.Errorf("encoding event: %w", err)
	}
	return append(dst, data...), nil
}

// appendField appends ,"name":value with value as a JSON string.
func appendField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// appendTime appends ,"name":"<RFC 3339 time>" as time.Time.MarshalJSON
// writes it, or reports false for a time it refuses.
func appendTime(b []byte, name string, t time.Time) ([]byte, bool) {
	n0 := len(b)
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, `":"`...)
	out, err := t.AppendText(b)
	if err != nil {
		return b[:n0], false
	}
	return append(out, '"'), true
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json.Marshal
// does: HTML characters and control characters escaped, invalid UTF-8 as
// U+FFFD, and U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
