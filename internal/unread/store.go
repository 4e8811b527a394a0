package unread

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/storage"
)

// ErrConflict is returned by Store.Put when another writer changed the
// state since it was read. It wraps jetstream.ErrKeyRevisionMismatch or
// jetstream.ErrKeyExists as well.
var ErrConflict = errors.New("unread state changed by another writer")

// maxUpdateAttempts bounds Store.Update's read-modify-write retries.
const maxUpdateAttempts = 10

// Store keeps states in the KV bucket "unread", through the jetstream
// KeyValue API. It reads states in either encoding (Decode) and writes
// them in the one the storage settings say (storage.Switch): JSON until an
// operator switches to the compact one, or a new installation starts
// with it. It is safe for concurrent use.
//
// A batched direct get, writes published to the key's subject and a
// hand-written encoding were measured against these library calls in the
// same run of make bench (BenchmarkDispatcherVsRaw, LibraryKV): +6 and
// +9 % dispatcher rate, +4 % CPU per event, under the 10 % a fast path
// must be worth to stay; they were removed. (The compact encoding, Encode,
// is there for the bytes a state takes in the bucket, not for speed.)
// GetMany reads keys concurrently instead, so a partition taken over with
// many users loads them in a few round trips of time.
type Store struct {
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	enc *storage.Switch
}

// getManyConcurrency bounds the reads GetMany has in flight.
const getManyConcurrency = 32

// Open opens the bucket, which provisioning creates.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, broker.BucketUnread)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", broker.BucketUnread, err)
	}
	return &Store{js: js, kv: kv, enc: storage.NewSwitch(js, broker.BucketConfig)}, nil
}

// WithEncoding returns a copy of the store that writes the encoding enc
// says (storage.Fixed: always the same one) instead of following the
// storage settings.
func (s *Store) WithEncoding(enc *storage.Switch) *Store {
	c := *s
	c.enc = enc
	return &c
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
	st, err := Decode(entry.Value())
	if err != nil {
		return State{}, 0, fmt.Errorf("decoding unread state %s: %w", key, err)
	}
	return st, entry.Revision(), nil
}

// GetFromLeader is Get asking the bucket stream's leader rather than the
// nearest replica (broker.LeaderGetMsg): Get's direct read may come from
// a replica that is behind, one catching up after it was stopped, and
// return an older state. It costs a JetStream API request; the dispatcher
// asks it only to confirm a state that looks behind the stream.
func (s *Store) GetFromLeader(ctx context.Context, key string) (State, uint64, error) {
	if !validKey(key) {
		return State{}, 0, fmt.Errorf("reading unread state %q: %w", key, jetstream.ErrInvalidKey)
	}
	m, err := broker.LeaderGetMsg(ctx, s.js, "KV_"+broker.BucketUnread, broker.MsgQuery{LastBySubj: "$KV." + broker.BucketUnread + "." + key})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, fmt.Errorf("reading unread state %s: %w", key, err)
	}
	if broker.KVRemoved(m.Header) {
		return State{}, 0, nil
	}
	st, err := Decode(m.Data)
	if err != nil {
		return State{}, 0, fmt.Errorf("decoding unread state %s: %w", key, err)
	}
	return st, m.Sequence, nil
}

// validKey reports whether key is one the library's KV calls take: not
// empty, no dot at either end, only letters, digits and - / _ = .
func validKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' {
		return false
	}
	for _, c := range key {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.ContainsRune("-/_=.", c):
		default:
			return false
		}
	}
	return true
}

// GetMany returns the states of keys and their revisions, as Get would,
// in the order of keys, reading up to getManyConcurrency keys at once.
func (s *Store) GetMany(ctx context.Context, keys []string) ([]Loaded, error) {
	out := make([]Loaded, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(getManyConcurrency)
	for i, key := range keys {
		g.Go(func() error {
			st, rev, err := s.Get(gctx, key)
			if err != nil {
				return err
			}
			out[i] = Loaded{State: st, Rev: rev}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// Loaded is a stored state with its revision (0: none stored), as GetMany
// reads it.
type Loaded struct {
	State State
	Rev   uint64
}

// Put writes st if the stored revision is still rev (0: the key must not
// exist) and returns the new revision. A concurrent change gives an error
// matching ErrConflict.
func (s *Store) Put(ctx context.Context, key string, st State, rev uint64) (uint64, error) {
	data, err := Encode(st, s.enc.Encoding(ctx))
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
