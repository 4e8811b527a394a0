package graph

import (
	"errors"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/records"
)

// SubscriptionState is what the Manager keeps about the subscription of
// one user. It holds no secret: the clientState and the URLs (which
// carry a key) are named by versions, short hashes.
type SubscriptionState struct {
	// Tenant and User are the user's tenant domain and address.
	Tenant string `json:"tenant"`
	User   string `json:"user"`
	// UserID is the user's Graph id the resource names.
	UserID string `json:"user_id"`
	// SubscriptionID is Graph's id of the subscription.
	SubscriptionID string `json:"subscription_id"`
	// Resource is the resource subscribed to (InboxResource).
	Resource string `json:"resource"`
	// Expires is the subscription's expirationDateTime.
	Expires time.Time `json:"expires"`
	// ClientStateVersion names the clientState the subscription was
	// created with; URLVersion its notification and lifecycle URLs.
	ClientStateVersion string `json:"client_state_version"`
	URLVersion         string `json:"url_version"`
	// Created is when the subscription was created, LastRenewal when it
	// was last renewed (zero when never).
	Created     time.Time `json:"created"`
	LastRenewal time.Time `json:"last_renewal,omitzero"`
}

// renewed is when the subscription last got its lifetime.
func (s *SubscriptionState) renewed() time.Time {
	if s.LastRenewal.After(s.Created) {
		return s.LastRenewal
	}
	return s.Created
}

// SubscriptionStore keeps the Manager's states by SubscriptionKey. Get
// answers an error matching ErrSubscriptionNotFound for a key that holds
// none; List leaves out a record that cannot be read, and its error
// (matching ErrBadSubscriptionRecord) comes with the others.
type SubscriptionStore = records.Store[SubscriptionState]

// ErrSubscriptionNotFound is the error of SubscriptionStore.Get for a key
// that has no state.
var ErrSubscriptionNotFound = errors.New("no Graph subscription stored")

// ErrBadSubscriptionRecord matches the error of a stored record that
// cannot be read.
var ErrBadSubscriptionRecord = errors.New("unreadable Graph subscription record")

// SubscriptionKey is the store key of a user (records.UserKey).
func SubscriptionKey(tenant, address string) string { return records.UserKey(tenant, address) }

// stateCodec names, encodes and checks the records of a store (JSON,
// checkState).
func stateCodec() records.Codec[SubscriptionState] {
	return records.JSON("Graph subscription", ErrSubscriptionNotFound, ErrBadSubscriptionRecord, checkState)
}

// checkState checks a stored state: a usable subscription id, a tenant,
// a user and an expiration.
func checkState(s SubscriptionState) error {
	if err := checkSubscriptionID(s.SubscriptionID); err != nil {
		return err
	}
	if s.Tenant == "" || s.User == "" || s.Expires.IsZero() {
		return errors.New("no tenant, user or expiration")
	}
	return nil
}

// MemorySubscriptionStore is a SubscriptionStore in memory, for tests and
// for a single process that may subscribe anew after a restart.
type MemorySubscriptionStore = records.Memory[SubscriptionState]

// NewMemorySubscriptionStore returns an empty store.
func NewMemorySubscriptionStore() *MemorySubscriptionStore {
	return records.NewMemory(stateCodec())
}
