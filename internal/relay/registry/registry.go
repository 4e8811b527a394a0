// Package registry keeps the relay's two registries in NATS key-value
// buckets of the relay's own NATS deployment:
//
//   - relay_partners: the partner organisations whose S2S tokens the relay
//     accepts, each with its realm and its registered signing certificates
//     (base64 DER, with the dates between which each is accepted): what
//     New-MsolServicePrincipalCredential registered for Exchange.
//   - relay_apps: for each appId, the push service that reaches its devices
//     and that service's settings. Credentials stay in files on the relay
//     hosts; a registration holds only their paths.
//
// A Store reads and changes the registries (pushctl relay uses it). A
// running relay watches both buckets: [Store.WatchPartners] keeps a
// [PartnerCache] that implements tokens.PartnerSource from memory, so that
// verifying a token never waits for NATS, and [Store.WatchApps] tells the
// relay when an app is added, changed or removed, on every relay replica,
// without a restart.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Names of the relay's key-value buckets.
const (
	BucketPartners = "relay_partners"
	BucketApps     = "relay_apps"
)

// bucketHistory is how many revisions of each registration are kept, so an
// operator can see what changed (nats kv history).
const bucketHistory = 5

// Errors of the registries, usable with errors.Is.
var (
	// ErrNotFound means there is no such partner, certificate or app.
	ErrNotFound = errors.New("not registered")
	// ErrExists means an app with that appId is already registered.
	ErrExists = errors.New("already registered")
	// ErrInvalid is wrapped by every error about a bad registration value.
	ErrInvalid = errors.New("invalid registration")
	// ErrConflict means the registration kept changing under a concurrent
	// writer; trying again is safe.
	ErrConflict = errors.New("registration changed concurrently")
)

// invalid returns an error wrapping ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Store reads and changes the partner and app registries.
type Store struct {
	partners jetstream.KeyValue
	apps     jetstream.KeyValue
	now      func() time.Time
}

// bucketConfigs are the buckets with the given replicas.
func bucketConfigs(replicas int) []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: BucketPartners, Description: "relay: partner organisations and their S2S signing certificates", History: bucketHistory, Storage: jetstream.FileStorage, Replicas: replicas},
		{Bucket: BucketApps, Description: "relay: apps and the push service of each (credentials are file paths)", History: bucketHistory, Storage: jetstream.FileStorage, Replicas: replicas},
	}
}

// Provision creates the buckets, or updates them to the given number of
// replicas (1 on one server, 3 on a cluster), and returns a Store over them.
// The relay calls it at start.
func Provision(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	if replicas < 1 || replicas > 5 {
		return nil, fmt.Errorf("provisioning relay buckets: replicas must be 1 to 5, got %d", replicas)
	}
	kvs := make([]jetstream.KeyValue, 0, 2)
	for _, cfg := range bucketConfigs(replicas) {
		kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("provisioning bucket %s: %w", cfg.Bucket, err)
		}
		kvs = append(kvs, kv)
	}
	return &Store{partners: kvs[0], apps: kvs[1], now: time.Now}, nil
}

// Open opens the buckets; a bucket that does not exist yet is created with
// one replica (a relay started later with more replicas updates it).
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kvs := make([]jetstream.KeyValue, 0, 2)
	for _, cfg := range bucketConfigs(1) {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, cfg)
			if errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = js.KeyValue(ctx, cfg.Bucket)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("opening bucket %s: %w", cfg.Bucket, err)
		}
		kvs = append(kvs, kv)
	}
	return &Store{partners: kvs[0], apps: kvs[1], now: time.Now}, nil
}

// WithClock returns a copy of the store that takes the time of changes
// from now.
func (s *Store) WithClock(now func() time.Time) *Store {
	c := *s
	c.now = now
	return &c
}

// maxUpdateAttempts bounds the read-modify-write retries of update.
const maxUpdateAttempts = 10

// get reads key into v and returns its revision; ErrNotFound if absent.
func get(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s/%s: %w", kv.Bucket(), key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decoding %s/%s: %w", kv.Bucket(), key, err)
	}
	return e.Revision(), nil
}

// update runs change on the current value of key (exists false when there
// is none) and stores what it returns, retrying when another writer got in
// between. change returning nil data deletes the key.
func update(ctx context.Context, kv jetstream.KeyValue, key string, change func(raw []byte, exists bool) ([]byte, error)) error {
	for range maxUpdateAttempts {
		var (
			raw []byte
			rev uint64
		)
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("reading %s/%s: %w", kv.Bucket(), key, err)
		default:
			raw, rev = e.Value(), e.Revision()
		}
		data, err := change(raw, rev != 0)
		if err != nil {
			return err
		}
		switch {
		case data == nil && rev == 0:
			return nil
		case data == nil:
			err = kv.Delete(ctx, key, jetstream.LastRevision(rev))
		case rev == 0:
			_, err = kv.Create(ctx, key, data)
		default:
			_, err = kv.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing %s/%s: %w", kv.Bucket(), key, err)
		}
		return nil
	}
	return fmt.Errorf("writing %s/%s: %w", kv.Bucket(), key, ErrConflict)
}

// list decodes every current value of kv, in key order.
func list[T any](ctx context.Context, kv jetstream.KeyValue) ([]T, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	var out []T
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("listing %s: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("listing %s: the watch ended early", kv.Bucket())
			}
			if e == nil {
				return out, nil
			}
			var v T
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return nil, fmt.Errorf("decoding %s/%s: %w", kv.Bucket(), e.Key(), err)
			}
			out = append(out, v)
		}
	}
}

// watch calls apply for every current entry of kv, then for every change,
// until ctx ends. apply gets the value, or nil when the key was deleted or
// purged. watch returns once the current entries have been applied; the
// changes are applied by a goroutine, which calls done when it ends.
func watch(ctx context.Context, kv jetstream.KeyValue, log zerolog.Logger, apply func(key string, value []byte), done func()) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watching %s: %w", kv.Bucket(), err)
	}
	step := func(e jetstream.KeyValueEntry) {
		if e.Operation() == jetstream.KeyValuePut {
			apply(e.Key(), e.Value())
			return
		}
		apply(e.Key(), nil)
	}
	// Apply the current entries before returning, so the caller starts
	// with the whole registry.
	for loaded := false; !loaded; {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return fmt.Errorf("loading %s: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("loading %s: the watch ended early", kv.Bucket())
			}
			if e == nil {
				loaded = true
				continue
			}
			step(e)
		}
	}
	go func() {
		defer done()
		for {
			select {
			case <-ctx.Done():
				_ = w.Stop()
				return
			case e, ok := <-w.Updates():
				if !ok {
					log.Warn().Str("bucket", kv.Bucket()).Msg("registry watch ended; changes are no longer picked up")
					return
				}
				if e != nil {
					step(e)
					// A change after start: say what changed, so an
					// operator sees it applied without a restart.
					change := "changed"
					if e.Operation() != jetstream.KeyValuePut {
						change = "removed"
					}
					log.Info().Str("bucket", kv.Bucket()).Str("key", e.Key()).Str("change", change).Msg("relay registry changed; applied")
				}
			}
		}
	}()
	return nil
}
