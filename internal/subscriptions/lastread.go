package subscriptions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/natsext"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// The batched direct get (the server's "multi_last" request, read with
// natsext.RequestMany): what its answer's messages carry. Each entry
// comes as a message with the stream's headers; the answer ends with an
// end-of-batch status, or is a status alone.
const (
	// numPendingHeader says, on each entry, how many more match; a server
	// that cannot answer in batches leaves it out.
	numPendingHeader = "Nats-Num-Pending"
	// statusHeader and descriptionHeader are a status message's code and
	// text, as the client library parses them from its first line.
	statusHeader      = "Status"
	descriptionHeader = "Description"
)

// The statuses of a batched read's answer.
const (
	statusEndOfBatch = "204" // with descEndOfBatch: the answer is whole
	statusNotFound   = "404" // no results, or an entry it could not load
	statusTooMany    = "413" // more entries than one answer may hold
	descEndOfBatch   = "EOB"
	descLoadFailed   = "Message Not Found"
)

// errNoAnswer is a batched read that ended without an answer: the
// iterator of natsext.RequestMany ends quietly when its time runs out, or
// when the server drops the request (a NATS user without the permission),
// where an answer always ends with a last entry or a status.
var errNoAnswer = errors.New("the server did not answer the batched read")

// errLoadFailed is a batched read the server could not complete: it found
// an entry it could not load (a storage fault), perhaps after sending
// others. The read fails rather than report fewer devices, or none.
var errLoadFailed = errors.New("the server could not load an entry of the batched read")

// errBatchRefused is a batched read the server does not answer in one
// batch: too many entries, or a server without batched reads. A smaller
// one is tried.
var errBatchRefused = errors.New("the server refused the batched read")

// errInvalidAnswer is an answer that is not one of a batched read.
var errInvalidAnswer = errors.New("invalid answer to the batched read")

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
	msgs, err := s.directGetLast(ctx, "KV_"+broker.BucketSubscriptions, subjects)
	if err != nil {
		return nil, err
	}
	out, pending, err := s.lastEntries(msgs, prefix)
	if err != nil {
		if errors.Is(err, errBatchRefused) {
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

// directGetLast sends a batched direct get of the last message of each of
// subjects to stream and returns its answer's messages, the end-of-batch
// status left out. The messages are read here rather than through a
// library's conversion, which reports a storage fault on the first entry
// as it reports no results (the two differ only in the status's
// description).
func (s *Store) directGetLast(ctx context.Context, stream string, subjects []string) (iter.Seq2[*nats.Msg, error], error) {
	req, err := json.Marshal(map[string][]string{"multi_last": subjects})
	if err != nil {
		return nil, fmt.Errorf("encoding the batched read: %w", err)
	}
	endOfBatch := func(m *nats.Msg) bool {
		return len(m.Data) == 0 && m.Header.Get(statusHeader) == statusEndOfBatch && m.Header.Get(descriptionHeader) == descEndOfBatch
	}
	msgs, err := natsext.RequestMany(ctx, s.js.Conn(), broker.APISubject(s.js)+"DIRECT.GET."+stream, req, natsext.RequestManySentinel(endOfBatch))
	if err != nil {
		return nil, fmt.Errorf("sending the batched read: %w", err)
	}
	return msgs, nil
}

// lastEntries reads the answer of a batched read of the bucket's stream
// (whose subjects start with prefix): its entries, and the last entry's
// count of entries still to come ("0" when the answer is whole, "" when it
// ended without a last entry). An answer of no entries at all is none of
// the users having a subscription. A "not found" status whose description
// is the server's "Message Not Found", or that comes after entries, is
// errLoadFailed: the server found an entry it could not load (a storage
// fault). A batch the server does not answer in one is errBatchRefused.
func (s *Store) lastEntries(msgs iter.Seq2[*nats.Msg, error], prefix string) ([]lastEntry, string, error) {
	var out []lastEntry
	pending := ""
	for m, err := range msgs {
		if err != nil {
			return nil, "", err
		}
		if status := m.Header.Get(statusHeader); status != "" && len(m.Data) == 0 {
			if err := answerStatus(status, m.Header.Get(descriptionHeader), len(out)); err != nil {
				return nil, "", err
			}
			return nil, "0", nil
		}
		e, np, err := s.answerEntry(m, prefix)
		if err != nil {
			return nil, "", err
		}
		out = append(out, e)
		pending = np
	}
	return out, pending, nil
}

// answerStatus reads a status that ends a batched read's answer after
// entries entries: nil for no results, or the error it stands for.
func answerStatus(status, description string, entries int) error {
	switch {
	case status == statusNotFound && (entries > 0 || description == descLoadFailed):
		return errLoadFailed
	case status == statusNotFound:
		return nil
	case status == statusTooMany || entries == 0:
		// A server without batched reads, or a batch too large: the
		// status reads as refused, and a smaller batch is tried.
		return fmt.Errorf("%w: %s %s", errBatchRefused, status, description)
	default:
		return fmt.Errorf("%w: status %s %s after %d entries", errInvalidAnswer, status, description, entries)
	}
}

// answerEntry reads one entry of a batched read's answer: the entry, and
// how many more match.
func (s *Store) answerEntry(m *nats.Msg, prefix string) (lastEntry, string, error) {
	np := m.Header.Get(numPendingHeader)
	if np == "" {
		// A server without batched reads answers with one message.
		return lastEntry{}, "", errBatchRefused
	}
	subject := m.Header.Get(jetstream.SubjectHeader)
	if !strings.HasPrefix(subject, prefix) {
		return lastEntry{}, "", fmt.Errorf("%w: subject %q outside the bucket", errInvalidAnswer, subject)
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return lastEntry{}, "", fmt.Errorf("%w: the sequence of %q: %w", errInvalidAnswer, subject, err)
	}
	at, err := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	if err != nil {
		return lastEntry{}, "", fmt.Errorf("%w: the time of %q: %w", errInvalidAnswer, subject, err)
	}
	key := strings.TrimPrefix(subject, prefix)
	user, _, _ := cutLastDot(key)
	e := lastEntry{user: user, key: key, rev: seq}
	if broker.KVRemoved(m.Header) {
		e.gone = true
	} else {
		e.sub, e.err = s.decodeValue(key, m.Data, at)
	}
	return e, np, nil
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
