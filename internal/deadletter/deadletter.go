// Package deadletter lists, shows, redrives and purges the notifications the
// dispatcher could not deliver, which it keeps in the PUSH_DEAD stream (one
// message per notification, see pushlog.DeadLetter).
//
// Letters are addressed by their PUSH_DEAD stream sequence. [List] selects
// them by tenant, user, reason and time; [Redrive] sends each one again to
// the relay and deletes the letter once the relay took it; [Delete] removes
// letters for good.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/scan"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
)

// Letter is one dead letter as stored.
type Letter struct {
	// Seq is the letter's PUSH_DEAD stream sequence: its id for show,
	// redrive and purge.
	Seq uint64 `json:"seq"`
	// Subject is push.dead.<tenant token>.<user token>.
	Subject string `json:"subject"`
	// Stored is when the stream stored it.
	Stored time.Time `json:"stored"`
	pushlog.DeadLetter
	// Invalid says why the message could not be decoded; the other
	// fields are then empty.
	Invalid string `json:"invalid,omitempty"`
}

// At is when the notification was given up: DeadAt, or the stored time.
func (l Letter) At() time.Time {
	if !l.DeadAt.IsZero() {
		return l.DeadAt
	}
	return l.Stored
}

// Filter selects letters. Zero fields select everything.
type Filter struct {
	// Tenant is an organization domain.
	Tenant string
	// User is an address; it needs Tenant.
	User string
	// Reason is one of the dispatcher's Reason* values.
	Reason string
	// Since and Until bound the time the notification was given up.
	Since, Until time.Time
	// Seqs, when set, selects exactly these stream sequences (the other
	// fields still apply).
	Seqs []uint64
}

// ErrNotFound is returned for a sequence that holds no dead letter.
var ErrNotFound = errors.New("no such dead letter")

// subjectFilter is the narrowest PUSH_DEAD subject filter for f.
func (f Filter) subjectFilter(keyer *events.Keyer) (string, error) {
	switch {
	case f.User != "" && f.Tenant == "":
		return "", errors.New("a user filter needs the tenant")
	case f.User != "":
		return pushlog.DeadSubject(keyer.UserKey(f.Tenant, f.User)), nil
	case f.Tenant != "":
		return broker.SubjectDead + "." + events.TenantToken(f.Tenant) + ".*", nil
	}
	return broker.SubjectDead + ".>", nil
}

// matches reports whether l passes the filters that the subject cannot express.
func (f Filter) matches(l Letter) bool {
	if len(f.Seqs) > 0 && !containsSeq(f.Seqs, l.Seq) {
		return false
	}
	if f.Reason != "" && !strings.EqualFold(l.Reason, f.Reason) {
		return false
	}
	at := l.At()
	if !f.Since.IsZero() && at.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && at.After(f.Until) {
		return false
	}
	return true
}

func containsSeq(seqs []uint64, seq uint64) bool {
	for _, s := range seqs {
		if s == seq {
			return true
		}
	}
	return false
}

// Decode turns a stored PUSH_DEAD message into a Letter. A message that is
// not a dead letter gives a Letter with Invalid set.
func Decode(m scan.Message) Letter {
	l := Letter{Seq: m.Seq, Subject: m.Subject, Stored: m.Stored}
	if err := json.Unmarshal(m.Data, &l.DeadLetter); err != nil {
		l.DeadLetter = pushlog.DeadLetter{}
		l.Invalid = fmt.Sprintf("not a dead letter: %v", err)
	}
	return l
}

// List returns the letters f selects, oldest first. Letters are read with
// an ordered consumer on the narrowest subject filter; the time filter
// applies to when the notification was given up.
func List(ctx context.Context, js jetstream.JetStream, keyer *events.Keyer, f Filter) ([]Letter, error) {
	if len(f.Seqs) > 0 {
		return listSeqs(ctx, js, f)
	}
	subject, err := f.subjectFilter(keyer)
	if err != nil {
		return nil, err
	}
	opts := scan.Options{Filters: []string{subject}}
	if !f.Since.IsZero() {
		// A letter is stored right after it was given up; a minute of
		// slack covers clock differences between hosts.
		opts.Since = f.Since.Add(-time.Minute)
	}
	var out []Letter
	err = scan.Stream(ctx, js, broker.StreamDead, opts, func(m scan.Message) error {
		if l := Decode(m); f.matches(l) {
			out = append(out, l)
		}
		return nil
	})
	return out, err
}

func listSeqs(ctx context.Context, js jetstream.JetStream, f Filter) ([]Letter, error) {
	var out []Letter
	for _, seq := range f.Seqs {
		l, err := Get(ctx, js, seq)
		if err != nil {
			return nil, err
		}
		if f.matches(l) && (f.Tenant == "" || strings.EqualFold(l.Tenant, f.Tenant)) && (f.User == "" || strings.EqualFold(l.User, f.User)) {
			out = append(out, l)
		}
	}
	return out, nil
}

// Get returns the letter stored at seq, or an error matching ErrNotFound.
func Get(ctx context.Context, js jetstream.JetStream, seq uint64) (Letter, error) {
	stream, err := js.Stream(ctx, broker.StreamDead)
	if err != nil {
		return Letter{}, fmt.Errorf("opening stream %s: %w", broker.StreamDead, err)
	}
	msg, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Letter{}, fmt.Errorf("%w: %d", ErrNotFound, seq)
	}
	if err != nil {
		return Letter{}, fmt.Errorf("reading dead letter %d: %w", seq, err)
	}
	return Decode(scan.Message{Seq: msg.Sequence, Subject: msg.Subject, Stored: msg.Time, Data: msg.Data}), nil
}

// Delete removes the letter at seq; a letter already gone is not an error.
func Delete(ctx context.Context, js jetstream.JetStream, seq uint64) error {
	stream, err := js.Stream(ctx, broker.StreamDead)
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", broker.StreamDead, err)
	}
	err = stream.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	// The server refuses to delete a message that is not there; that is
	// what the caller wanted.
	if _, getErr := stream.GetMsg(ctx, seq); errors.Is(getErr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("deleting dead letter %d: %w", seq, err)
}
