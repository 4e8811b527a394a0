package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// numPendingHeader says, on each message of a batched direct get, how
// many more match.
const numPendingHeader = "Nats-Num-Pending"

// kvOperationHeader marks a deletion or a purge in a KV bucket's stream.
const kvOperationHeader = "KV-Operation"

// errNoAnswer is a batched read that ended without an answer: the
// library's iterator ends quietly when its time runs out, or when the
// server drops the request (a NATS user without the permission), where an
// answer always ends with a last entry or a "no results" status.
var errNoAnswer = errors.New("the server did not answer the batched read")

// errLoadFailed is a batched read the server could not complete: it found
// an entry it could not load (a storage fault), perhaps after sending
// others. The read fails rather than report fewer devices, or none.
var errLoadFailed = errors.New("the server could not load an entry of the batched read")

// lastEntry is the latest entry of one key, as readLast finds it.
type lastEntry struct {
	user, key string // the user key and the entry's whole key
	rev       uint64
	gone      bool // deleted or purged
	sub       Subscription
	err       error // the value could not be decoded
}

// cached is the entry as a Cache holds it: an unreadable value is no
// device to push to.
func (e lastEntry) cached() cachedEntry {
	return cachedEntry{rev: e.rev, gone: e.gone || e.err != nil, sub: e.sub}
}

// readLast returns the latest entry of every key of the users with the
// user keys userKeys, deletions included. It asks for the last message of
// each subject <user key>.* of the bucket's stream in one batched direct
// get, which the server answers from its subject index, without a
// consumer. A batch the server refuses as too large (more than 1,024
// entries) or cuts short is read again in halves, and one user's as a
// stream (readStream). A read that gets no answer is an error matching
// errNoAnswer, and one the server could not complete errLoadFailed, never
// "no devices".
func (s *Store) readLast(ctx context.Context, userKeys []string) ([]lastEntry, error) {
	prefix := "$KV." + broker.BucketSubscriptions + "."
	subjects := make([]string, len(userKeys))
	for i, k := range userKeys {
		subjects[i] = prefix + k + ".*"
	}
	msgs, err := jetstreamext.GetLastMsgsFor(ctx, s.js, "KV_"+broker.BucketSubscriptions, subjects)
	if err != nil {
		return nil, err
	}
	out, pending, err := s.lastEntries(msgs, prefix)
	if err != nil {
		// A batch too large is refused with a status the library reports
		// as unsupported; a smaller one is tried.
		if errors.Is(err, jetstreamext.ErrBatchUnsupported) {
			return s.readSmaller(ctx, userKeys)
		}
		return nil, err
	}
	switch pending {
	case "0":
		return out, nil
	case "":
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", errNoAnswer, err)
		}
		return nil, errNoAnswer
	default:
		return s.readSmaller(ctx, userKeys)
	}
}

// lastEntries reads the answer of a batched read of the bucket's stream
// (whose subjects start with prefix): its entries, and the last entry's
// count of entries still to come ("0" when the answer is whole, "" when it
// ended without a last entry). An answer of no entries at all is none of
// the users having a subscription. A "not found" after entries is
// errLoadFailed: the server answers "no results" only when nothing
// matched, and "not found" after it found an entry it could not load,
// which the library reports alike; when that entry is the first, the two
// cannot be told apart here (the status's description is not passed on).
func (s *Store) lastEntries(msgs iter.Seq2[*jetstream.RawStreamMsg, error], prefix string) ([]lastEntry, string, error) {
	var out []lastEntry
	pending := ""
	for m, err := range msgs {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			if len(out) > 0 {
				return nil, "", errLoadFailed
			}
			return nil, "0", nil
		}
		if err == nil && !strings.HasPrefix(m.Subject, prefix) {
			err = fmt.Errorf("%w: subject %q outside the bucket", jetstreamext.ErrInvalidResponse, m.Subject)
		}
		if err != nil {
			return nil, "", err
		}
		key := strings.TrimPrefix(m.Subject, prefix)
		user, _, _ := cutLastDot(key)
		e := lastEntry{user: user, key: key, rev: m.Sequence}
		switch m.Header.Get(kvOperationHeader) {
		case "DEL", "PURGE":
			e.gone = true
		default:
			e.sub, e.err = s.decodeValue(key, m.Data, m.Time)
		}
		out = append(out, e)
		pending = m.Header.Get(numPendingHeader)
	}
	return out, pending, nil
}

// readSmaller reads what one batched read could not: readLast of each
// half of userKeys, or one user's entries as a stream.
func (s *Store) readSmaller(ctx context.Context, userKeys []string) ([]lastEntry, error) {
	if len(userKeys) == 1 {
		return s.readStream(ctx, userKeys[0])
	}
	half := len(userKeys) / 2
	first, err := s.readLast(ctx, userKeys[:half])
	if err != nil {
		return nil, err
	}
	second, err := s.readLast(ctx, userKeys[half:])
	if err != nil {
		return nil, err
	}
	return append(first, second...), nil
}

// readStream reads the entries of the user with key userKey through a
// watch of <user key>.*, deletions left out: for a user with more devices
// than one batched answer holds, possible only without a limit per user or
// with one above 1,000.
func (s *Store) readStream(ctx context.Context, userKey string) ([]lastEntry, error) {
	var out []lastEntry
	err := broker.ReadAll(ctx, s.kv, userKey+".*", func(e jetstream.KeyValueEntry) error {
		sub, err := s.decode(e)
		out = append(out, lastEntry{user: userKey, key: e.Key(), rev: e.Revision(), sub: sub, err: err})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
