// Package records keeps a source's own records by key (the subscriptions a
// source manages: their ids, expiry, watermark), encoded by the source, in
// memory or in a NATS JetStream KV bucket. The Graph and EWS subscription
// managers share it.
package records

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// Codec says how the records of one kind are named, encoded and checked.
type Codec[T any] struct {
	// What names a record in errors, e.g. "Graph subscription".
	What string
	// NotFound is the error Get wraps for a key that holds no record.
	NotFound error
	// Encode and Decode turn a record into bytes and back; Decode checks
	// the record and refuses one that cannot be used.
	Encode func(T) ([]byte, error)
	Decode func([]byte) (T, error)
}

// Store keeps records by key.
type Store[T any] interface {
	// Get returns the record of key, or an error matching the codec's
	// NotFound.
	Get(ctx context.Context, key string) (T, error)
	// Put writes the record of key.
	Put(ctx context.Context, key string, v T) error
	// Delete removes key; a key that is not there is no error.
	Delete(ctx context.Context, key string) error
	// List returns every record by key. A record that cannot be decoded
	// is left out, and its error comes with the others.
	List(ctx context.Context) (map[string]T, error)
}

// Memory is a Store in memory, for tests and for a single process that may
// start afresh after a restart. It keeps the records encoded, as a real
// store would. It is safe for concurrent use.
type Memory[T any] struct {
	codec   Codec[T]
	mu      sync.Mutex
	records map[string][]byte
}

// NewMemory returns an empty store of codec's records.
func NewMemory[T any](codec Codec[T]) *Memory[T] {
	return &Memory[T]{codec: codec, records: map[string][]byte{}}
}

// Get returns the record of key.
func (m *Memory[T]) Get(_ context.Context, key string) (T, error) {
	m.mu.Lock()
	data, ok := m.records[key]
	m.mu.Unlock()
	if !ok {
		var zero T
		return zero, fmt.Errorf("reading %s %s: %w", m.codec.What, key, m.codec.NotFound)
	}
	return m.codec.decode(key, data)
}

// Put writes the record of key.
func (m *Memory[T]) Put(_ context.Context, key string, v T) error {
	data, err := m.codec.Encode(v)
	if err != nil {
		return err
	}
	m.PutRaw(key, data)
	return nil
}

// PutRaw stores data under key as it is, as an unreadable or older record
// would be stored: for tests.
func (m *Memory[T]) PutRaw(key string, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[key] = data
}

// Delete removes key.
func (m *Memory[T]) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.records, key)
	return nil
}

// List returns every readable record.
func (m *Memory[T]) List(context.Context) (map[string]T, error) {
	m.mu.Lock()
	records := maps.Clone(m.records)
	m.mu.Unlock()
	out := make(map[string]T, len(records))
	var errs []error
	for key, data := range records {
		v, err := m.codec.decode(key, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[key] = v
	}
	return out, errors.Join(errs...)
}

// KV is a Store in a NATS JetStream KV bucket, one encoded record per key.
// It is safe for concurrent use.
type KV[T any] struct {
	codec Codec[T]
	kv    jetstream.KeyValue
}

// NewKV keeps codec's records in kv.
func NewKV[T any](kv jetstream.KeyValue, codec Codec[T]) *KV[T] {
	return &KV[T]{codec: codec, kv: kv}
}

// Get returns the record of key.
func (s *KV[T]) Get(ctx context.Context, key string) (T, error) {
	var zero T
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return zero, fmt.Errorf("reading %s %s: %w", s.codec.What, key, s.codec.NotFound)
	}
	if err != nil {
		return zero, fmt.Errorf("reading %s %s from bucket %s: %w", s.codec.What, key, s.kv.Bucket(), err)
	}
	return s.codec.decode(key, e.Value())
}

// Put writes the record of key.
func (s *KV[T]) Put(ctx context.Context, key string, v T) error {
	data, err := s.codec.Encode(v)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("writing %s %s to bucket %s: %w", s.codec.What, key, s.kv.Bucket(), err)
	}
	return nil
}

// Delete removes key.
func (s *KV[T]) Delete(ctx context.Context, key string) error {
	if err := s.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("deleting %s %s from bucket %s: %w", s.codec.What, key, s.kv.Bucket(), err)
	}
	return nil
}

// List reads every current record of the bucket.
func (s *KV[T]) List(ctx context.Context) (map[string]T, error) {
	out := map[string]T{}
	var errs []error
	err := broker.ReadAll(ctx, s.kv, jetstream.AllKeys, func(e jetstream.KeyValueEntry) error {
		v, err := s.codec.decode(e.Key(), e.Value())
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		out[e.Key()] = v
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s records: %w", s.codec.What, err)
	}
	return out, errors.Join(errs...)
}

// decode reads the record of key.
func (c Codec[T]) decode(key string, data []byte) (T, error) {
	v, err := c.Decode(data)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("reading %s %s: %w", c.What, key, err)
	}
	return v, nil
}

// JSON is the Codec of records of T written as JSON, named what: a record
// that is not JSON, or that check refuses, is an error matching bad with
// the reason; NotFound is notFound. Unknown fields are ignored, so an
// older version reads what a newer one wrote.
func JSON[T any](what string, notFound, bad error, check func(T) error) Codec[T] {
	return Codec[T]{
		What:     what,
		NotFound: notFound,
		Encode: func(v T) ([]byte, error) {
			data, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("encoding the %s record: %w", what, err)
			}
			return data, nil
		},
		Decode: func(data []byte) (T, error) {
			var v, zero T
			if err := json.NewDecoder(bytes.NewReader(data)).Decode(&v); err != nil {
				return zero, fmt.Errorf("%w: %v", bad, err)
			}
			if err := check(v); err != nil {
				return zero, fmt.Errorf("%w: %v", bad, err)
			}
			return v, nil
		},
	}
}
