package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// Store keeps credentials in the KV bucket broker.BucketCredentials.
type Store struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// Open opens the credentials bucket of a provisioned layout.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, broker.BucketCredentials)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s (provision the layout first): %w", broker.BucketCredentials, err)
	}
	return &Store{kv: kv, now: time.Now}, nil
}

// Create stores a new credential and returns it with its secret, which is
// not kept anywhere: show it once.
func (s *Store) Create(ctx context.Context, spec Spec) (Credential, string, error) {
	spec, err := spec.normalize()
	if err != nil {
		return Credential{}, "", err
	}
	if spec.Kind == KindBasic {
		if _, err := s.byUser(ctx, spec.User); err == nil {
			return Credential{}, "", fmt.Errorf("%w: a basic credential for user %q exists; rotate or revoke it", ErrInvalid, spec.User)
		}
	}
	id, err := newID()
	if err != nil {
		return Credential{}, "", err
	}
	secret, err := newSecret(spec.Kind, id)
	if err != nil {
		return Credential{}, "", err
	}
	c := Credential{ID: id, Kind: spec.Kind, User: spec.User, Tenants: spec.Tenants, Roles: spec.Roles,
		Description: spec.Description, SecretHash: hashOf(secret), Created: s.now().UTC()}
	data, err := json.Marshal(c)
	if err != nil {
		return Credential{}, "", fmt.Errorf("encoding credential %s: %w", id, err)
	}
	if _, err := s.kv.Create(ctx, id, data); err != nil {
		return Credential{}, "", fmt.Errorf("storing credential %s: %w", id, err)
	}
	return c, secret, nil
}

// Get returns the credential with id.
func (s *Store) Get(ctx context.Context, id string) (Credential, uint64, error) {
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Credential{}, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Credential{}, 0, fmt.Errorf("reading credential %s: %w", id, err)
	}
	var c Credential
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return Credential{}, 0, fmt.Errorf("decoding credential %s: %w", id, err)
	}
	return c, e.Revision(), nil
}

// List returns every credential, sorted by id.
func (s *Store) List(ctx context.Context) ([]Credential, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing credentials: %w", err)
	}
	var out []Credential
	for key := range lister.Keys() {
		c, _, err := s.Get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Rotate gives the credential a new secret, which it returns; the old one
// stops working within the watchers' delay.
func (s *Store) Rotate(ctx context.Context, id string) (Credential, string, error) {
	c, rev, err := s.Get(ctx, id)
	if err != nil {
		return Credential{}, "", err
	}
	secret, err := newSecret(c.Kind, c.ID)
	if err != nil {
		return Credential{}, "", err
	}
	c.SecretHash, c.Rotated = hashOf(secret), s.now().UTC()
	data, err := json.Marshal(c)
	if err != nil {
		return Credential{}, "", fmt.Errorf("encoding credential %s: %w", id, err)
	}
	if _, err := s.kv.Update(ctx, id, data, rev); err != nil {
		return Credential{}, "", fmt.Errorf("storing credential %s: %w", id, err)
	}
	return c, secret, nil
}

// Revoke deletes the credential.
func (s *Store) Revoke(ctx context.Context, id string) error {
	if _, _, err := s.Get(ctx, id); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("revoking credential %s: %w", id, err)
	}
	return nil
}

// byUser finds the basic credential of a user name.
func (s *Store) byUser(ctx context.Context, user string) (Credential, error) {
	all, err := s.List(ctx)
	if err != nil {
		return Credential{}, err
	}
	for _, c := range all {
		if c.Kind == KindBasic && c.User == user {
			return c, nil
		}
	}
	return Credential{}, ErrNotFound
}

// Index is an in-memory copy of the bucket, kept up to date by a watch,
// that authenticates requests without a round trip to NATS.
type Index struct {
	mu      sync.RWMutex
	byID    map[string]Credential
	byUser  map[string]Credential
	synced  bool
	watchOK bool
}

// Watch loads every credential and follows changes until ctx ends.
func (s *Store) Watch(ctx context.Context, log zerolog.Logger) (*Index, error) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watching bucket %s: %w", broker.BucketCredentials, err)
	}
	ix := &Index{byID: map[string]Credential{}, byUser: map[string]Credential{}, watchOK: true}
	initial := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		first := true
		for e := range w.Updates() {
			if e == nil {
				if first {
					first = false
					ix.mu.Lock()
					ix.synced = true
					ix.mu.Unlock()
					close(initial)
				}
				continue
			}
			ix.apply(e, log)
		}
		ix.mu.Lock()
		ix.watchOK = false
		ix.mu.Unlock()
	}()
	select {
	case <-initial:
		return ix, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("loading credentials: %w", ctx.Err())
	}
}

// apply records one change of the bucket.
func (ix *Index) apply(e jetstream.KeyValueEntry, log zerolog.Logger) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if old, ok := ix.byID[e.Key()]; ok && old.Kind == KindBasic {
		delete(ix.byUser, old.User)
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(ix.byID, e.Key())
		if ix.synced {
			log.Info().Str("credential", e.Key()).Msg("credential revoked")
		}
		return
	}
	var c Credential
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		log.Warn().Err(err).Str("credential", e.Key()).Msg("ignoring an unreadable credential")
		delete(ix.byID, e.Key())
		return
	}
	ix.byID[c.ID] = c
	if c.Kind == KindBasic {
		ix.byUser[c.User] = c
	}
	if ix.synced {
		log.Info().Str("credential", c.ID).Strs("tenants", c.Tenants).Msg("credential added or changed")
	}
}

// Check is a readiness check: nil while the index follows the bucket.
func (ix *Index) Check(context.Context) error {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if !ix.watchOK {
		return errors.New("the credentials watch stopped")
	}
	return nil
}

// Has reports whether the index holds the credential with id.
func (ix *Index) Has(id string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	_, ok := ix.byID[id]
	return ok
}

// Len is how many credentials the index holds.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byID)
}

// Bearer returns the scope of a generated Bearer secret.
func (ix *Index) Bearer(secret string) (Scope, bool) {
	return ix.Secret(KindBearer, secret)
}

// Secret returns the scope of a generated secret (ppk_<id>.<random>) of a
// credential of kind: a Bearer token, a Graph clientState, an EWS URL key.
// A secret of another kind is not accepted.
func (ix *Index) Secret(kind Kind, secret string) (Scope, bool) {
	id, ok := bearerID(secret)
	if !ok {
		return Scope{}, false
	}
	ix.mu.RLock()
	c, found := ix.byID[id]
	ix.mu.RUnlock()
	if !found || c.Kind != kind || !c.matches(secret) {
		return Scope{}, false
	}
	return c.Scope(), true
}

// Basic returns the scope of a basic user and password.
func (ix *Index) Basic(user, password string) (Scope, bool) {
	ix.mu.RLock()
	c, found := ix.byUser[user]
	ix.mu.RUnlock()
	if !found || !c.matches(password) {
		return Scope{}, false
	}
	return c.Scope(), true
}
