package ews

import (
	"errors"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/records"
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

// SubscriptionStore keeps the Manager's states by SubscriptionKey. Get
// answers an error matching ErrSubscriptionNotFound for a key that holds
// none; List leaves out a record that cannot be read, and its error
// (matching ErrBadSubscriptionRecord) comes with the others.
type SubscriptionStore = records.Store[SubscriptionState]

// ErrSubscriptionNotFound is the error of SubscriptionStore.Get for a key
// that has no state.
var ErrSubscriptionNotFound = errors.New("no EWS subscription stored")

// ErrBadSubscriptionRecord matches the error of a stored record that
// cannot be read.
var ErrBadSubscriptionRecord = errors.New("unreadable EWS subscription record")

// SubscriptionKey is the store key of a mailbox (records.UserKey).
func SubscriptionKey(tenant, user string) string { return records.UserKey(tenant, user) }

// stateCodec names, encodes and checks the records of a store (JSON,
// checkState).
func stateCodec() records.Codec[SubscriptionState] {
	return records.JSON("EWS subscription", ErrSubscriptionNotFound, ErrBadSubscriptionRecord, checkState)
}

// checkState checks a stored state: a tenant, a user, and a subscription
// id, watermark and Inbox folder id as notifications carry them.
func checkState(s SubscriptionState) error {
	switch {
	case s.Tenant == "" || s.User == "":
		return errors.New("no tenant or user")
	case s.SubscriptionID == "" || checkToken("", s.SubscriptionID, MaxIDLen) != nil:
		return errors.New("no usable subscription id")
	case s.InboxFolderID == "" || checkToken("", s.InboxFolderID, MaxIDLen) != nil:
		return errors.New("no usable Inbox folder id")
	case checkToken("", s.Watermark, MaxWatermarkLen) != nil:
		return errors.New("an unusable watermark")
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
