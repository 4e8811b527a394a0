package dispatcher

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// beaconPrefix starts the keys of the dispatchers' beacons in the leases
// bucket; the bucket's TTL removes those of dispatchers that are gone.
const beaconPrefix = "dispatchers."

// firstBeaconWait bounds New's first beacon.
const firstBeaconWait = 10 * time.Second

// beacon is a dispatcher's key in the leases bucket, written every
// heartbeat: a write only the majority of the bucket's servers can
// confirm. A dispatcher whose server is cut off from the others hears its
// own heartbeats through that server all along; the beacon's confirmation
// is what tells it apart from one the others still hear (see
// membership.confirmed).
type beacon struct {
	kv    jetstream.KeyValue
	key   string
	value []byte
}

// openBeacon opens the leases bucket and writes the beacon of the
// dispatcher instanceID once, so that a NATS user without the permission
// (or a layout without the bucket) stops the dispatcher at its start,
// rather than holding every push.
func openBeacon(ctx context.Context, js jetstream.JetStream, instanceID string) (*beacon, error) {
	kv, err := js.KeyValue(ctx, broker.BucketLeases)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s (provision the layout again): %w", broker.BucketLeases, err)
	}
	b := &beacon{kv: kv, key: beaconPrefix + keyToken(instanceID), value: []byte(instanceID)}
	wctx, cancel := context.WithTimeout(ctx, firstBeaconWait)
	defer cancel()
	if err := b.send(wctx); err != nil {
		return nil, err
	}
	return b, nil
}

// send writes the beacon and waits for the cluster's confirmation.
func (b *beacon) send(ctx context.Context) error {
	if _, err := b.kv.Put(ctx, b.key, b.value); err != nil {
		return fmt.Errorf("writing the dispatcher's beacon %s in bucket %s (its NATS user must be allowed to publish to $KV.%s.%s>): %w",
			b.key, broker.BucketLeases, broker.BucketLeases, beaconPrefix, err)
	}
	return nil
}

// keyToken makes id one token of a KV key: what a key may not hold, and
// dots, become underscores.
func keyToken(id string) string {
	if id == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=':
			return r
		default:
			return '_'
		}
	}, id)
}
