package ews

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/sources/records"
)

// SubscriptionBucket is the NATS KV bucket a KVSubscriptionStore is meant
// for; the integrator provisions it (history 1 is enough, no TTL: a
// record lives as long as its mailbox is listed).
const SubscriptionBucket = "ews_subscriptions"

// KVSubscriptionStore is a SubscriptionStore in a NATS JetStream KV bucket
// (SubscriptionBucket), one JSON record per SubscriptionKey. It is safe
// for concurrent use.
type KVSubscriptionStore = records.KV[SubscriptionState]

// NewKVSubscriptionStore keeps the subscriptions in kv.
func NewKVSubscriptionStore(kv jetstream.KeyValue) *KVSubscriptionStore {
	return records.NewKV(kv, stateCodec())
}
