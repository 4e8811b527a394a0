package ews

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// SubscriptionBucket is the NATS KV bucket a KVSubscriptionStore is meant
// for; the integrator provisions it (history 1 is enough, no TTL: a
// record lives as long as its mailbox is listed).
const SubscriptionBucket = "ews_subscriptions"

// KVSubscriptionStore is a SubscriptionStore in a NATS JetStream KV bucket
// (SubscriptionBucket), one JSON record per SubscriptionKey. It is safe
// for concurrent use.
type KVSubscriptionStore struct {
	kv jetstream.KeyValue
}

// NewKVSubscriptionStore keeps the subscriptions in kv.
func NewKVSubscriptionStore(kv jetstream.KeyValue) *KVSubscriptionStore {
	return &KVSubscriptionStore{kv: kv}
}

// Get returns the state of key.
func (s *KVSubscriptionStore) Get(ctx context.Context, key string) (SubscriptionState, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return SubscriptionState{}, fmt.Errorf("reading EWS subscription %s: %w", key, ErrSubscriptionNotFound)
	}
	if err != nil {
		return SubscriptionState{}, fmt.Errorf("reading EWS subscription %s from bucket %s: %w", key, s.kv.Bucket(), err)
	}
	st, err := decodeState(e.Value())
	if err != nil {
		return SubscriptionState{}, fmt.Errorf("reading EWS subscription %s: %w", key, err)
	}
	return st, nil
}

// Put writes the state of key.
func (s *KVSubscriptionStore) Put(ctx context.Context, key string, st SubscriptionState) error {
	data, err := encodeState(st)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("writing EWS subscription %s to bucket %s: %w", key, s.kv.Bucket(), err)
	}
	return nil
}

// Delete removes key.
func (s *KVSubscriptionStore) Delete(ctx context.Context, key string) error {
	if err := s.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("deleting EWS subscription %s from bucket %s: %w", key, s.kv.Bucket(), err)
	}
	return nil
}

// List reads every current record of the bucket.
func (s *KVSubscriptionStore) List(ctx context.Context) (map[string]SubscriptionState, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("listing EWS subscriptions in bucket %s: %w", s.kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string]SubscriptionState{}
	var errs []error
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("listing EWS subscriptions in bucket %s: %w", s.kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("listing EWS subscriptions in bucket %s: the watch ended early", s.kv.Bucket())
			}
			if e == nil {
				return out, errors.Join(errs...)
			}
			st, err := decodeState(e.Value())
			if err != nil {
				errs = append(errs, fmt.Errorf("reading EWS subscription %s: %w", e.Key(), err))
				continue
			}
			out[e.Key()] = st
		}
	}
}
