package unread

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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
	kv jetstream.KeyValue
}

// Open opens the bucket, which provisioning creates.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, broker.BucketUnread)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", broker.BucketUnread, err)
	}
	return &Store{kv: kv}, nil
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

// Put writes st if the stored revision is still rev (0: the key must not
// exist) and returns the new revision. A concurrent change gives an error
// matching ErrConflict.
func (s *Store) Put(ctx context.Context, key string, st State, rev uint64) (uint64, error) {
	data, err := st.appendJSON(make([]byte, 0, 192))
	if err != nil {
		return 0, fmt.Errorf("encoding unread state %s: %w", key, err)
	}
	var next uint64
	if rev == 0 {
		next, err = s.kv.Create(ctx, key, data)
	} else {
		next, err = s.kv.Update(ctx, key, data, rev)
	}
	switch {
	case err == nil:
		return next, nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, fmt.Errorf("writing unread state %s: %w: %w", key, ErrConflict, err)
	default:
		return 0, fmt.Errorf("writing unread state %s: %w", key, err)
	}
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
