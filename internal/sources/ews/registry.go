package ews

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Subscription is what pushproxy knows about an EWS push subscription: whose
// mailbox it watches and the EWS id of that mailbox's Inbox folder.
type Subscription struct {
	Tenant string
	User   string
	// InboxFolderID is the Id attribute of the Inbox's t:FolderId as EWS
	// returns it (GetFolder of the distinguished folder "inbox"). Events in
	// that folder get the mailbox name events.Inbox.
	InboxFolderID string
}

func (s Subscription) mailbox(folder *ID) string {
	if folder == nil {
		return ""
	}
	if s.InboxFolderID != "" && folder.ID == s.InboxFolderID {
		return events.Inbox
	}
	return folder.ID
}

// ErrUnknownSubscription is returned by a SubscriptionRegistry for a
// subscription id it does not know. The handler answers such a notification
// with SubscriptionStatus Unsubscribe, which makes Exchange end it.
var ErrUnknownSubscription = errors.New("unknown EWS subscription")

// SubscriptionRegistry finds the subscription a notification is about.
// Lookup returns ErrUnknownSubscription (possibly wrapped) for an id it does
// not know; any other error means it could not tell, and the handler asks
// Exchange to retry later.
type SubscriptionRegistry interface {
	Lookup(ctx context.Context, subscriptionID string) (Subscription, error)
}

// Registries is a SubscriptionRegistry that asks each of its registries in
// turn: the first that knows a subscription answers. An id none knows is
// ErrUnknownSubscription only when every one says so; when one cannot
// tell (the manager of a standby ingest, ErrNotReady), its error is the
// answer, so that Exchange retries rather than ends the subscription.
// Ingest chains the registry file (subscriptions made by others) before
// the manager's (the subscriptions it keeps).
type Registries []SubscriptionRegistry

// Lookup asks each registry in turn.
func (rs Registries) Lookup(ctx context.Context, subscriptionID string) (Subscription, error) {
	var undecided error
	for _, r := range rs {
		sub, err := r.Lookup(ctx, subscriptionID)
		switch {
		case err == nil:
			return sub, nil
		case !errors.Is(err, ErrUnknownSubscription) && undecided == nil:
			undecided = err
		}
	}
	if undecided != nil {
		return Subscription{}, undecided
	}
	return Subscription{}, fmt.Errorf("looking up EWS subscription %s: %w", subscriptionID, ErrUnknownSubscription)
}

// RegistryEntry is one subscription in a registry file.
type RegistryEntry struct {
	SubscriptionID string `json:"subscription_id"`
	Tenant         string `json:"tenant"`
	User           string `json:"user"`
	InboxFolderID  string `json:"inbox_folder_id"`
}

// RegistryFile is the JSON form of a static registry:
//
//	{"subscriptions":[{"subscription_id":"<EWS SubscriptionId>",
//	  "tenant":"fabrikam.com","user":"alice@fabrikam.com",
//	  "inbox_folder_id":"<Id of the Inbox's t:FolderId>"}]}
//
// Whoever creates the push subscriptions (the Subscribe call with the URL of
// this handler) writes the SubscriptionId it got back into this file.
type RegistryFile struct {
	Subscriptions []RegistryEntry `json:"subscriptions"`
}

// StaticRegistry is a SubscriptionRegistry held in memory, built from a
// list of entries. It never changes after it is built, so it is safe for
// concurrent use.
type StaticRegistry struct {
	subs map[string]Subscription
}

// NewStaticRegistry checks entries and builds a registry from them. Every
// entry needs a subscription id, a valid tenant domain and user address,
// and an Inbox folder id; subscription ids must be unique.
func NewStaticRegistry(entries []RegistryEntry) (*StaticRegistry, error) {
	r := &StaticRegistry{subs: make(map[string]Subscription, len(entries))}
	for i, e := range entries {
		where := fmt.Sprintf("subscription %d", i+1)
		id := strings.TrimSpace(e.SubscriptionID)
		if err := checkToken("", id, MaxIDLen); err != nil || id == "" {
			return nil, fmt.Errorf("%s: subscription_id must be a non-empty EWS SubscriptionId without spaces", where)
		}
		where = fmt.Sprintf("subscription %q", id)
		tenant := strings.ToLower(strings.TrimSpace(e.Tenant))
		if err := events.ValidateTenant(tenant); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		user := strings.TrimSpace(e.User)
		if err := events.ValidateAddress("user", user); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		inbox := strings.TrimSpace(e.InboxFolderID)
		if err := checkToken("", inbox, MaxIDLen); err != nil || inbox == "" {
			return nil, fmt.Errorf("%s: inbox_folder_id must be the non-empty Id of the Inbox's EWS FolderId", where)
		}
		if _, dup := r.subs[id]; dup {
			return nil, fmt.Errorf("%s: listed twice", where)
		}
		r.subs[id] = Subscription{Tenant: tenant, User: user, InboxFolderID: inbox}
	}
	return r, nil
}

// LoadRegistryFile reads a RegistryFile from path and builds a registry.
// Unknown fields are an error, so a typo does not silently drop a setting.
func LoadRegistryFile(path string) (*StaticRegistry, error) {
	return sources.LoadFile(path, "EWS subscription registry", func(f RegistryFile) (*StaticRegistry, error) {
		return NewStaticRegistry(f.Subscriptions)
	})
}

// Lookup returns the subscription with id, or ErrUnknownSubscription.
func (r *StaticRegistry) Lookup(_ context.Context, id string) (Subscription, error) {
	s, ok := r.subs[id]
	if !ok {
		return Subscription{}, ErrUnknownSubscription
	}
	return s, nil
}

// Len is the number of subscriptions in the registry.
func (r *StaticRegistry) Len() int { return len(r.subs) }
