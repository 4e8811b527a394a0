package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KVRemoved reports whether h, the headers of a message read from a KV
// bucket's stream without the KeyValue API (a batched or a leader's
// read), mark a deletion or a purge of its key rather than a value.
func KVRemoved(h nats.Header) bool {
	switch h.Get("KV-Operation") {
	case "DEL", "PURGE":
		return true
	}
	return false
}

// ReadAll calls visit for every current entry of kv whose key matches
// filter (deleted keys left out), and returns once the watch has delivered
// them all. A visit error stops the read and is returned.
func ReadAll(ctx context.Context, kv jetstream.KeyValue, filter string, visit func(jetstream.KeyValueEntry) error) error {
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("reading bucket %s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("reading bucket %s: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("reading bucket %s: %w", kv.Bucket(), errors.New("the watch ended early"))
			}
			if e == nil {
				return nil
			}
			if err := visit(e); err != nil {
				return err
			}
		}
	}
}
