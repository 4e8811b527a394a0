package native

import (
	"strings"
	"unicode/utf8"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// parseFast reads a body of the usual shape without reflection: event
// objects (one, an array of them, or NDJSON) whose keys are spelled as the
// schema spells them, whose strings are valid UTF-8 without escapes or
// control characters, and whose numbers are integers of at most nine
// digits. It reports false for any other body, which decode then reads:
// for the bodies it takes, encoding/json gives the same items, so the
// answer does not depend on which of the two read it. The strings of the
// events share one copy of the body.
func parseFast(body []byte, mediaType string, max int) ([]sources.Item, bool) {
	if mediaType != MediaJSON && mediaType != MediaNDJSON {
		return nil, false
	}
	sc := scanner{s: string(body)}
	sc.space()
	array := mediaType == MediaJSON && sc.peek() == '['
	if array {
		sc.i++
		sc.space()
	}
	items := make([]sources.Item, 0, min(max, 1+strings.Count(sc.s, "\n")))
	for sc.peek() == '{' {
		if len(items) == max {
			return nil, false
		}
		var w Event
		if !sc.object(&w) {
			return nil, false
		}
		var item sources.Item
		item.Event, item.Err = w.event()
		items = append(items, item)
		sc.space()
		if mediaType == MediaJSON && !array {
			break
		}
		if array {
			if sc.peek() != ',' {
				break
			}
			sc.i++
			sc.space()
			if sc.peek() != '{' {
				return nil, false
			}
		}
	}
	if array {
		if sc.peek() != ']' {
			return nil, false
		}
		sc.i++
		sc.space()
	}
	if sc.i != len(sc.s) || len(items) == 0 {
		return nil, false
	}
	return items, true
}

// scanner reads JSON from s at i. Its methods report false, without
// saying why, for anything parseFast leaves to encoding/json.
type scanner struct {
	s string
	i int
}

// peek is the next byte, or 0 at the end.
func (sc *scanner) peek() byte {
	if sc.i < len(sc.s) {
		return sc.s[sc.i]
	}
	return 0
}

// space skips JSON white space.
func (sc *scanner) space() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// object reads one event object into w.
func (sc *scanner) object(w *Event) bool {
	sc.i++ // {
	sc.space()
	if sc.peek() == '}' {
		sc.i++
		return true
	}
	for {
		key, ok := sc.str()
		if !ok {
			return false
		}
		sc.space()
		if sc.peek() != ':' {
			return false
		}
		sc.i++
		sc.space()
		if !sc.field(w, key) {
			return false
		}
		sc.space()
		switch sc.peek() {
		case ',':
			sc.i++
			sc.space()
		case '}':
			sc.i++
			return true
		default:
			return false
		}
	}
}

// field reads the value of key into w.
func (sc *scanner) field(w *Event, key string) bool {
	var ok bool
	switch key {
	case "tenant":
		w.Tenant, ok = sc.str()
	case "user":
		w.User, ok = sc.str()
	case "mailbox":
		w.Mailbox, ok = sc.str()
	case "from_mailbox":
		w.FromMailbox, ok = sc.str()
	case "kind":
		w.Kind, ok = sc.str()
	case "change_id":
		w.ChangeID, ok = sc.str()
	case "occurred_at":
		w.OccurredAt, ok = sc.str()
	case "v":
		w.V, ok = sc.intPtr()
	case "unread":
		w.Unread, ok = sc.intPtr()
	case "count":
		w.Count, ok = sc.integer(true)
	case "uidvalidity":
		var n int
		n, ok = sc.integer(false)
		w.UIDValidity = uint32(n)
	case "uid":
		var n int
		n, ok = sc.integer(false)
		w.UID = uint32(n)
	}
	return ok
}

// str reads a string without escapes or control characters.
func (sc *scanner) str() (string, bool) {
	if sc.peek() != '"' {
		return "", false
	}
	start := sc.i + 1
	ascii := true
	for j := start; j < len(sc.s); j++ {
		switch c := sc.s[j]; {
		case c == '"':
			v := sc.s[start:j]
			if !ascii && !utf8.ValidString(v) {
				return "", false
			}
			sc.i = j + 1
			return v, true
		case c == '\\' || c < ' ':
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// intPtr reads an integer into a new int.
func (sc *scanner) intPtr() (*int, bool) {
	n, ok := sc.integer(true)
	if !ok {
		return nil, false
	}
	return &n, true
}

// integer reads an integer of one to nine digits, negative only when
// signed, that a delimiter follows.
func (sc *scanner) integer(signed bool) (int, bool) {
	j := sc.i
	neg := signed && sc.peek() == '-'
	if neg {
		j++
	}
	start, n := j, 0
	for ; j < len(sc.s) && '0' <= sc.s[j] && sc.s[j] <= '9'; j++ {
		n = n*10 + int(sc.s[j]-'0')
	}
	digits := j - start
	if digits == 0 || digits > 9 || digits > 1 && sc.s[start] == '0' || j == len(sc.s) {
		return 0, false
	}
	switch sc.s[j] {
	case ' ', '\t', '\n', '\r', ',', '}':
	default:
		return 0, false
	}
	sc.i = j
	if neg {
		n = -n
	}
	return n, true
}
