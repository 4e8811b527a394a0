package unread

import (
	"fmt"
	"strconv"
	"time"
)

// appendJSON appends the JSON encoding of s to b: the same bytes as
// json.Marshal(s) (TestAppendJSONMatchesMarshal checks it), written
// without reflection because the dispatcher writes a state for every push.
func (s State) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"count":`...)
	b = strconv.AppendInt(b, int64(s.Count), 10)
	b = append(b, `,"exact":`...)
	b = strconv.AppendBool(b, s.Exact)
	if s.LastSeq != 0 {
		b = append(b, `,"last_seq":`...)
		b = strconv.AppendUint(b, s.LastSeq, 10)
	}
	var err error
	if !s.LastEventAt.IsZero() {
		if b, err = appendTime(b, `,"last_event_at":`, s.LastEventAt); err != nil {
			return nil, err
		}
	}
	if s.LastPushedCount != nil {
		b = append(b, `,"last_pushed_count":`...)
		b = strconv.AppendInt(b, int64(*s.LastPushedCount), 10)
	}
	if !s.LastPushedAt.IsZero() {
		if b, err = appendTime(b, `,"last_pushed_at":`, s.LastPushedAt); err != nil {
			return nil, err
		}
	}
	if s.LastPushedSeq != 0 {
		b = append(b, `,"last_pushed_seq":`...)
		b = strconv.AppendUint(b, s.LastPushedSeq, 10)
	}
	return append(b, '}'), nil
}

// appendTime appends field and t quoted in RFC 3339 with nanoseconds, as
// time.Time's MarshalJSON writes it (and refuses it: years outside 0-9999).
func appendTime(b []byte, field string, t time.Time) ([]byte, error) {
	b = append(b, field...)
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return nil, fmt.Errorf("encoding time: %w", err)
	}
	return append(b, '"'), nil
}
