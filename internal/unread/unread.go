// Package unread keeps the unread state of each user: the count the badge
// should show, whether it is exact or estimated, the last stream event
// applied, and what was last pushed to the user's devices.
//
// [Apply] is pure: it folds one event into a state. [Store] keeps the states
// in the KV bucket "unread" under events.Keyer.UserKey, written with revision
// checks so that two writers never overwrite each other unknowingly, as
// JSON or in the compact encoding ([Encode]; [Decode] reads both).
package unread

import (
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
)

// State is what is known about one user's unread count.
type State struct {
	// Count is the unread count of the counted mailbox (the Inbox by default).
	Count int `json:"count"`
	// Exact is true when Count comes from an authoritative count and no
	// change has adjusted it since; false when it is an estimate.
	Exact bool `json:"exact"`
	// LastSeq is the MAIL stream sequence of the last event applied. Events
	// at or below it are redeliveries and change nothing.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// LastEventAt is when the last applied event happened at its source.
	LastEventAt time.Time `json:"last_event_at,omitzero"`
	// LastPushedCount is the count last pushed to the user's devices; nil
	// when nothing was pushed yet.
	LastPushedCount *int `json:"last_pushed_count,omitempty"`
	// LastPushedAt is when the last push succeeded.
	LastPushedAt time.Time `json:"last_pushed_at,omitzero"`
	// LastPushedSeq is the stream sequence of the last event the last push
	// covered.
	LastPushedSeq uint64 `json:"last_pushed_seq,omitempty"`
}

// Options says how events change the count.
type Options struct {
	// Mailbox is the mailbox whose unread messages are counted;
	// events.Inbox when empty, like the OWA badge.
	Mailbox string
}

func (o Options) mailbox() string {
	if o.Mailbox == "" {
		return events.Inbox
	}
	return o.Mailbox
}

// Apply folds the event stored at stream sequence seq into s and reports
// whether it was applied. An event at or below s.LastSeq is a redelivery and
// leaves s as it is. An authoritative count (e.Unread) of the counted
// mailbox sets the count and makes it exact; otherwise the event's change
// adjusts the count, never below zero, and makes it an estimate. Events
// that do not concern the counted mailbox only advance LastSeq.
func Apply(s State, e *events.Event, seq uint64, opts Options) (State, bool) {
	if seq != 0 && seq <= s.LastSeq {
		return s, false
	}
	mailbox := opts.mailbox()
	switch {
	case e.Unread != nil && e.Mailbox == mailbox:
		s.Count = *e.Unread
		s.Exact = true
	default:
		if d := e.DeltaFor(mailbox); d != 0 {
			s.Count = max(0, s.Count+d)
			s.Exact = false
		}
	}
	if seq > s.LastSeq {
		s.LastSeq = seq
	}
	if e.OccurredAt.After(s.LastEventAt) {
		s.LastEventAt = e.OccurredAt
	}
	return s, true
}

// Pushed returns s after a push of count covering events up to seq
// succeeded at at.
func (s State) Pushed(count int, seq uint64, at time.Time) State {
	c := count
	s.LastPushedCount = &c
	s.LastPushedAt = at
	if seq > s.LastPushedSeq {
		s.LastPushedSeq = seq
	}
	return s
}

// NeedsPush reports whether the devices may show something else than
// s.Count: nothing was pushed yet, or a different count was.
func (s State) NeedsPush() bool {
	return s.LastPushedCount == nil || *s.LastPushedCount != s.Count
}
