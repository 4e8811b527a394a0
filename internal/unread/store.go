package unread

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// ErrConflict is returned by Store.Put when another writer changed the
// state since it was read. It wraps jetstream.ErrKeyRevisionMismatch or
// jetstream.ErrKeyExists as well.
var ErrConflict = errors.New("unread state changed by another writer")

// maxUpdateAttempts bounds Store.Update's read-modify-write retries.
const maxUpdateAttempts = 10

// Store keeps states in the KV bucket "unread". It is safe for concurrent use.
type Store struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
	// batch reads many keys per request and names the bucket's subjects
	// for Put; nil when the bucket does not allow it (GetMany then reads
	// key by key, Put writes through kv).
	batch *batchReader
}

// Open opens the bucket, which provisioning creates.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, broker.BucketUnread)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", broker.BucketUnread, err)
	}
	return &Store{js: js, kv: kv, batch: newBatchReader(ctx, js, kv)}, nil
}

// Get returns the state of the user key and its revision; a user never seen
// has the zero State and revision 0.
func (s *Store) Get(ctx context.Context, key string) (State, uint64, error) {
	entry, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, fmt.Errorf("reading unread state %s: %w", key, err)
	}
	var st State
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		return State{}, 0, fmt.Errorf("decoding unread state %s: %w", key, err)
	}
	return st, entry.Revision(), nil
}

// GetMany returns the states of distinct keys and their revisions, as Get
// would, in the order of keys. It reads many keys per request (a batched
// direct get) where the server allows it, and falls back to Get otherwise.
func (s *Store) GetMany(ctx context.Context, keys []string) ([]Loaded, error) {
	out := make([]Loaded, len(keys))
	var single []int // indexes read with Get
	for start := 0; start < len(keys); start += maxBatchKeys {
		end := min(start+maxBatchKeys, len(keys))
		var chunk []int
		for i := start; i < end; i++ {
			if plainKey(keys[i]) {
				chunk = append(chunk, i)
			} else {
				single = append(single, i)
			}
		}
		if s.batch == nil || len(chunk) < 2 {
			single = append(single, chunk...)
			continue
		}
		ks := make([]string, len(chunk))
		for j, i := range chunk {
			ks[j] = keys[i]
		}
		got := make([]Loaded, len(chunk))
		if err := s.batch.read(ctx, ks, got); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("reading unread states: %w", err)
			}
			single = append(single, chunk...)
			continue
		}
		for j, i := range chunk {
			out[i] = got[j]
		}
	}
	for _, i := range single {
		st, rev, err := s.Get(ctx, keys[i])
		if err != nil {
			return nil, err
		}
		out[i] = Loaded{State: st, Rev: rev}
	}
	return out, nil
}

// plainKey reports whether key is a valid KV key (letters, digits and
// -/_=., no empty token): only those name exactly one subject, in a
// batched read or a write.
func plainKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '/', c == '_', c == '=', c == '.':
		default:
			return false
		}
	}
	return true
}

// Put writes st if the stored revision is still rev (0: the key must not
// exist) and returns the new revision. A concurrent change gives an error
// matching ErrConflict.
func (s *Store) Put(ctx context.Context, key string, st State, rev uint64) (uint64, error) {
	data, err := st.appendJSON(make([]byte, 0, 192))
	if err != nil {
		return 0, fmt.Errorf("encoding unread state %s: %w", key, err)
	}
	next, err := s.write(ctx, key, data, rev)
	switch {
	case err == nil:
		return next, nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, fmt.Errorf("writing unread state %s: %w: %w", key, ErrConflict, err)
	default:
		return 0, fmt.Errorf("writing unread state %s: %w", key, err)
	}
}

// write stores data under key if its revision is still rev. Where the
// bucket allows it (see newBatchReader) it publishes to the key's subject
// itself, as KeyValue.Create and Update do, without their per-call key
// validation by regular expression; on a revision conflict it lets the
// KeyValue call decide (a deleted key may be created again) and name the
// error. Any other error is returned as it is.
func (s *Store) write(ctx context.Context, key string, data []byte, rev uint64) (uint64, error) {
	if s.batch != nil && plainKey(key) {
		m := &nats.Msg{Subject: s.batch.pre + key, Header: nats.Header{}, Data: data}
		ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev))
		if err == nil {
			return ack.Sequence, nil
		}
		if !wrongLastSequence(err) {
			return 0, err
		}
	}
	if rev == 0 {
		return s.kv.Create(ctx, key, data)
	}
	return s.kv.Update(ctx, key, data, rev)
}

// wrongLastSequence reports whether err is the server's answer to a
// revision check that failed (code 10071, or 10164 from replicated streams).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Update reads the state of key, lets change compute the next one and
// writes it with a revision check, starting over when another writer got
// there first. It returns the state written.
func (s *Store) Update(ctx context.Context, key string, change func(State) (State, error)) (State, error) {
	for range maxUpdateAttempts {
		cur, rev, err := s.Get(ctx, key)
		if err != nil {
			return State{}, err
		}
		next, err := change(cur)
		if err != nil {
			return State{}, err
		}
		if _, err := s.Put(ctx, key, next, rev); err != nil {
			if errors.Is(err, ErrConflict) {
				continue
			}
			return State{}, err
		}
		return next, nil
	}
	return State{}, fmt.Errorf("updating unread state %s: %w after %d attempts", key, ErrConflict, maxUpdateAttempts)
}

// Delete forgets the state of key.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("deleting unread state %s: %w", key, err)
	}
	return nil
}
