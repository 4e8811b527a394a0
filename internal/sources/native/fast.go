package native

import (
	"github.com/pushproxy/pushproxy/internal/jsonscan"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// parseFast decodes the usual body without reflection: NDJSON (lines),
// or one JSON object or an array of them, each object flat, with the
// documented keys spelled as documented, strings of printable ASCII
// without escapes, plain integers and nulls, and at most max of them. It gives the items the
// library path (encoding/json, reader) gives for such a body, and reports
// false for anything else (an escape, an unknown or differently spelled
// key, a fraction, a value of another type, a syntax error, no event or
// too many), which the library path then decodes and explains.
//
// It exists because encoding/json was about 8 % of ingest's CPU for
// batches of events (BenchmarkIngestBatch's profile, 0.37 s of 4.36 s);
// FuzzParseFast checks it against the library path.
func parseFast(body []byte, lines bool, max int) ([]sources.Item, bool) {
	s := jsonscan.New(body)
	var items []sources.Item
	add := func() bool {
		if len(items) == max {
			return false
		}
		w, ok := object(&s)
		if !ok {
			return false
		}
		var it sources.Item
		it.Event, it.Err = w.event()
		items = append(items, it)
		return true
	}
	s.Space()
	switch {
	case lines:
		for !s.Done() {
			if !add() {
				return nil, false
			}
			s.Space()
		}
	case s.Eat('['):
		for {
			s.Space()
			if !add() {
				return nil, false
			}
			s.Space()
			if s.Eat(']') {
				break
			}
			if !s.Eat(',') {
				return nil, false
			}
		}
	default:
		if !add() {
			return nil, false
		}
	}
	if !s.End() || len(items) == 0 {
		return nil, false
	}
	return items, true
}

// object reads one event object.
func object(s *jsonscan.Scanner) (*Event, bool) {
	w := &Event{}
	return w, s.Object(func(key []byte) bool { return field(s, w, key) })
}

// field reads the value of key into w. A null leaves a string or an
// integer as it is and sets a pointer to nil, as encoding/json does.
func field(s *jsonscan.Scanner, w *Event, key []byte) bool {
	null := s.Null()
	switch string(key) {
	case "tenant":
		return null || s.StringInto(&w.Tenant)
	case "user":
		return null || s.StringInto(&w.User)
	case "mailbox":
		return null || s.StringInto(&w.Mailbox)
	case "from_mailbox":
		return null || s.StringInto(&w.FromMailbox)
	case "kind":
		return null || s.StringInto(&w.Kind)
	case "change_id":
		return null || s.StringInto(&w.ChangeID)
	case "occurred_at":
		return null || s.StringInto(&w.OccurredAt)
	case "v":
		return intPtr(s, &w.V, null)
	case "unread":
		return intPtr(s, &w.Unread, null)
	case "count":
		return null || s.IntInto(&w.Count)
	case "uidvalidity":
		return null || s.Uint32Into(&w.UIDValidity)
	case "uid":
		return null || s.Uint32Into(&w.UID)
	}
	return false
}

// intPtr reads an integer into a new *dst, or sets it to nil for a null.
func intPtr(s *jsonscan.Scanner, dst **int, null bool) bool {
	if null {
		*dst = nil
		return true
	}
	var n int
	ok := s.IntInto(&n)
	*dst = &n
	return ok
}
