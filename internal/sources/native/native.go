// Package native parses pushproxy's own event API: one event object, a JSON
// array of them, or NDJSON (one object per line). The schema is documented
// in internal/ingest/API.md.
//
// Decoding is strict: a field this version does not know is rejected by
// name, and so is a value of the wrong type, so that a client's mistake is
// found at once rather than silently dropped.
package native

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Media types the native API accepts.
const (
	MediaJSON   = "application/json"
	MediaNDJSON = "application/x-ndjson"
)

// DefaultMaxEvents is the default bound on the events of one request.
const DefaultMaxEvents = 1000

// Options bounds what one request may hold.
type Options struct {
	// MaxEvents is the most events one request may carry (DefaultMaxEvents when 0).
	MaxEvents int
}

// Event is the wire form of one native event. Fields left out take the
// defaults described in API.md; source and received_at are set by ingest.
type Event struct {
	V           *int   `json:"v"`
	Tenant      string `json:"tenant"`
	User        string `json:"user"`
	Mailbox     string `json:"mailbox"`
	FromMailbox string `json:"from_mailbox"`
	Kind        string `json:"kind"`
	Unread      *int   `json:"unread"`
	Count       int    `json:"count"`
	ChangeID    string `json:"change_id"`
	UIDValidity uint32 `json:"uidvalidity"`
	UID         uint32 `json:"uid"`
	OccurredAt  string `json:"occurred_at"`
}

// Parse reads the events of a request body of media type mediaType
// (MediaJSON or MediaNDJSON). A body that is not JSON, holds no event or
// more than opt.MaxEvents is a request-level error; a well-formed element
// with a wrong field is an Item with an *events.ValidationError.
//
// One json.Decoder reads the whole body, so each event is scanned once,
// and it finds every error and names it.
func Parse(body []byte, mediaType string, opt Options) ([]sources.Item, error) {
	max := opt.MaxEvents
	if max <= 0 {
		max = DefaultMaxEvents
	}
	r := reader{body: body, max: max, dec: json.NewDecoder(bytes.NewReader(body))}
	r.dec.DisallowUnknownFields()
	var err error
	switch mediaType {
	case MediaNDJSON:
		r.lines = true
		err = r.values()
	case MediaJSON:
		err = r.document()
	default:
		return nil, sources.Malformed("unsupported media type %q (want %s or %s)", mediaType, MediaJSON, MediaNDJSON)
	}
	if err != nil {
		return nil, err
	}
	if len(r.items) == 0 {
		return nil, sources.Malformed("the request holds no event")
	}
	return r.items, nil
}

// reader decodes the events of one body.
type reader struct {
	body  []byte
	dec   *json.Decoder
	max   int
	lines bool // report positions as lines (NDJSON)
	items []sources.Item
}

// document reads an application/json body: one event or an array of them.
func (r *reader) document() error {
	trimmed := bytes.TrimLeft(r.body, " \t\r\n")
	if len(trimmed) == 0 {
		return sources.Malformed("empty body: send an event object or an array of them")
	}
	if trimmed[0] != '[' {
		if err := r.next(); err != nil {
			return err
		}
		return r.end()
	}
	if _, err := r.dec.Token(); err != nil {
		return r.malformed(err)
	}
	for r.dec.More() {
		if err := r.next(); err != nil {
			return err
		}
	}
	if _, err := r.dec.Token(); err != nil {
		return r.malformed(err)
	}
	return r.end()
}

// values reads NDJSON: event objects separated by newlines.
func (r *reader) values() error {
	for r.dec.More() {
		if err := r.next(); err != nil {
			return err
		}
	}
	return r.end()
}

// next decodes one event.
func (r *reader) next() error {
	if len(r.items) == r.max {
		return sources.TooLarge("more than %d events in one request", r.max)
	}
	var w *Event
	var item sources.Item
	switch err := r.dec.Decode(&w); {
	case err != nil && sources.IsSyntax(err):
		return r.malformed(err)
	case err != nil:
		item.Err = sources.FieldError(err, w, "")
	case w == nil:
		item.Err = sources.Invalid("", "must be a JSON object, got null")
	default:
		item.Event, item.Err = w.event()
	}
	r.items = append(r.items, item)
	return nil
}

// end makes sure nothing but white space follows the events.
func (r *reader) end() error {
	// The body is in memory: look at what follows the last value rather
	// than read on through the decoder, which would grow its buffer.
	off := min(int(r.dec.InputOffset()), len(r.body))
	rest := r.body[off:]
	if trailing := bytes.TrimLeft(rest, " \t\r\n"); len(trailing) > 0 {
		return r.malformedAt(off+len(rest)-len(trailing), errors.New("unexpected data after the events"))
	}
	return nil
}

// malformed is the 400 answer for a syntax error at the decoder's
// position.
func (r *reader) malformed(err error) error {
	return r.malformedAt(min(int(r.dec.InputOffset()), len(r.body)), err)
}

// malformedAt is the 400 answer for a syntax error at byte off of the
// body.
func (r *reader) malformedAt(off int, err error) error {
	if r.lines {
		return sources.Malformed("line %d is not valid JSON: %v", 1+bytes.Count(r.body[:off], []byte("\n")), err)
	}
	return sources.Malformed("not valid JSON (at byte %d): %v", off, err)
}

// event converts the wire form to an event.
func (w *Event) event() (events.Event, error) {
	e := events.Event{
		Version:     events.SchemaVersion,
		Tenant:      w.Tenant,
		User:        w.User,
		Mailbox:     w.Mailbox,
		FromMailbox: w.FromMailbox,
		Kind:        events.Kind(w.Kind),
		Unread:      w.Unread,
		Count:       w.Count,
		ChangeID:    w.ChangeID,
		UIDValidity: w.UIDValidity,
		UID:         w.UID,
		Source:      events.SourceNative,
	}
	if w.V != nil {
		e.Version = *w.V
	}
	if w.OccurredAt != "" {
		t, err := time.Parse(time.RFC3339Nano, w.OccurredAt)
		if err != nil {
			return events.Event{}, sources.Invalid("occurred_at", "must be an RFC 3339 time such as 2025-01-31T09:30:00Z, got %q", sources.Clip(w.OccurredAt))
		}
		e.OccurredAt = t.UTC()
	}
	return e, nil
}
