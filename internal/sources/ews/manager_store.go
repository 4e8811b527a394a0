package ews

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
)

// SubscriptionState is what the Manager keeps about the push subscription
// of one mailbox. It holds no secret: the notification URL and its key
// are not stored.
type SubscriptionState struct {
	// Tenant and User are the mailbox's tenant domain and address.
	Tenant string `json:"tenant"`
	User   string `json:"user"`
	// SubscriptionID is Exchange's id of the subscription.
	SubscriptionID string `json:"subscription_id"`
	// Watermark is the newest watermark seen: of the last notification,
	// or the one the subscription started at. A new subscription starts
	// from it, so that nothing in between is missed. Empty when Exchange
	// gave none.
	Watermark string `json:"watermark,omitempty"`
	// InboxFolderID is the Id of the Inbox's t:FolderId
	// (Subscription.InboxFolderID), read once with GetFolder.
	InboxFolderID string `json:"inbox_folder_id"`
	// Subscribed is when the subscription was made; LastNotification
	// when its last notification (events or a StatusEvent) was stored,
	// zero when none was.
	Subscribed       time.Time `json:"subscribed"`
	LastNotification time.Time `json:"last_notification,omitzero"`
}

// lastHeard is when the subscription last showed it was alive: its last
// notification, or its making.
func (s *SubscriptionState) lastHeard() time.Time {
	if s.LastNotification.After(s.Subscribed) {
		return s.LastNotification
	}
	return s.Subscribed
}

// SubscriptionStore keeps the Manager's subscriptions across restarts,
// by SubscriptionKey. Implementations must be safe for concurrent use;
// the Manager writes each key from one goroutine at a time.
type SubscriptionStore interface {
	// Get returns the state of key, or an error matching
	// ErrSubscriptionNotFound.
	Get(ctx context.Context, key string) (SubscriptionState, error)
	// Put writes the state of key.
	Put(ctx context.Context, key string, s SubscriptionState) error
	// Delete removes key; a key that is not there is no error.
	Delete(ctx context.Context, key string) error
	// List returns every state by key. A record that cannot be read is
	// left out, and the error (matching ErrBadSubscriptionRecord) comes
	// with the others.
	List(ctx context.Context) (map[string]SubscriptionState, error)
}

// ErrSubscriptionNotFound is the error of SubscriptionStore.Get for a key
// that has no state.
var ErrSubscriptionNotFound = errors.New("no EWS subscription stored")

// ErrBadSubscriptionRecord matches the error of a stored record that
// cannot be read.
var ErrBadSubscriptionRecord = errors.New("unreadable EWS subscription record")

// SubscriptionKey is the store key of a mailbox: <tenant token>.<hash>,
// the tenant as events.TenantToken writes it and 128 bits of SHA-256 of
// the address in lower case, in hex. It is a valid NATS KV key.
func SubscriptionKey(tenant, user string) string {
	h := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(user))))
	return events.TenantToken(normalTenant(tenant)) + "." + hex.EncodeToString(h[:16])
}

// encodeState writes a state as JSON.
func encodeState(s SubscriptionState) ([]byte, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encoding an EWS subscription record: %w", err)
	}
	return data, nil
}

// decodeState reads a stored state: JSON with a tenant, a user, and a
// subscription id, watermark and Inbox folder id as notifications carry
// them. Unknown fields are ignored, so an older version reads what a
// newer one wrote.
func decodeState(data []byte) (SubscriptionState, error) {
	var s SubscriptionState
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&s); err != nil {
		return SubscriptionState{}, fmt.Errorf("%w: %v", ErrBadSubscriptionRecord, err)
	}
	switch {
	case s.Tenant == "" || s.User == "":
		return SubscriptionState{}, fmt.Errorf("%w: no tenant or user", ErrBadSubscriptionRecord)
	case s.SubscriptionID == "" || checkToken("", s.SubscriptionID, MaxIDLen) != nil:
		return SubscriptionState{}, fmt.Errorf("%w: no usable subscription id", ErrBadSubscriptionRecord)
	case s.InboxFolderID == "" || checkToken("", s.InboxFolderID, MaxIDLen) != nil:
		return SubscriptionState{}, fmt.Errorf("%w: no usable Inbox folder id", ErrBadSubscriptionRecord)
	case checkToken("", s.Watermark, MaxWatermarkLen) != nil:
		return SubscriptionState{}, fmt.Errorf("%w: an unusable watermark", ErrBadSubscriptionRecord)
	}
	return s, nil
}

// MemorySubscriptionStore is a SubscriptionStore in memory, for tests and
// for a single process that may subscribe anew after a restart. It keeps
// the records encoded, as a real store would.
type MemorySubscriptionStore struct {
	mu      sync.Mutex
	records map[string][]byte
}

// NewMemorySubscriptionStore returns an empty store.
func NewMemorySubscriptionStore() *MemorySubscriptionStore {
	return &MemorySubscriptionStore{records: map[string][]byte{}}
}

// Get returns the state of key.
func (m *MemorySubscriptionStore) Get(_ context.Context, key string) (SubscriptionState, error) {
	m.mu.Lock()
	data, ok := m.records[key]
	m.mu.Unlock()
	if !ok {
		return SubscriptionState{}, fmt.Errorf("reading EWS subscription %s: %w", key, ErrSubscriptionNotFound)
	}
	s, err := decodeState(data)
	if err != nil {
		return SubscriptionState{}, fmt.Errorf("reading EWS subscription %s: %w", key, err)
	}
	return s, nil
}

// Put writes the state of key.
func (m *MemorySubscriptionStore) Put(_ context.Context, key string, s SubscriptionState) error {
	data, err := encodeState(s)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[key] = data
	return nil
}

// Delete removes key.
func (m *MemorySubscriptionStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.records, key)
	return nil
}

// List returns every readable state.
func (m *MemorySubscriptionStore) List(context.Context) (map[string]SubscriptionState, error) {
	m.mu.Lock()
	records := maps.Clone(m.records)
	m.mu.Unlock()
	out := make(map[string]SubscriptionState, len(records))
	var errs []error
	for key, data := range records {
		s, err := decodeState(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading EWS subscription %s: %w", key, err))
			continue
		}
		out[key] = s
	}
	return out, errors.Join(errs...)
}
