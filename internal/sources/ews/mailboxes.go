package ews

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// ManagedMailbox is a mailbox whose Inbox the Manager keeps a push
// subscription on: the user's tenant domain and SMTP address, as events
// name them.
type ManagedMailbox struct {
	Tenant string `json:"tenant"`
	User   string `json:"user"`
}

// MailboxFile is the JSON form of the list of mailboxes to subscribe to:
//
//	{"mailboxes":[{"tenant":"fabrikam.com","user":"alice@fabrikam.com"},
//	  {"tenant":"fabrikam.com","user":"bob@fabrikam.com"}]}
//
// Unknown fields are an error, so a typo does not silently drop a
// setting. Whoever provisions mailboxes writes it (an export of the
// directory, a configuration management template); the Manager reads it
// again every ManagerConfig.ListInterval, so an edited file is followed
// without a restart, and a file that cannot be read leaves the
// subscriptions as they are.
type MailboxFile struct {
	Mailboxes []ManagedMailbox `json:"mailboxes"`
}

// MailboxLister lists the mailboxes to keep subscriptions on.
type MailboxLister interface {
	ListMailboxes(ctx context.Context) ([]ManagedMailbox, error)
}

// NewMailboxList checks and normalises entries: a valid tenant domain (in
// lower case, without a final dot), an SMTP address with an @, each
// mailbox once (addresses compared without case). The list comes back
// sorted by tenant, then address.
func NewMailboxList(entries []ManagedMailbox) ([]ManagedMailbox, error) {
	out := make([]ManagedMailbox, 0, len(entries))
	seen := make(map[string]bool, len(entries))
	for i, e := range entries {
		tenant := normalTenant(e.Tenant)
		if err := events.ValidateTenant(tenant); err != nil {
			return nil, fmt.Errorf("mailbox %d: %w", i+1, err)
		}
		user := strings.TrimSpace(e.User)
		if err := events.ValidateAddress("user", user); err != nil {
			return nil, fmt.Errorf("mailbox %d: %w", i+1, err)
		}
		if !strings.Contains(user, "@") {
			return nil, fmt.Errorf("mailbox %d: user %q is not an SMTP address", i+1, user)
		}
		key := SubscriptionKey(tenant, user)
		if seen[key] {
			return nil, fmt.Errorf("mailbox %d: %s of %s is listed twice", i+1, user, tenant)
		}
		seen[key] = true
		out = append(out, ManagedMailbox{Tenant: tenant, User: user})
	}
	slices.SortFunc(out, func(a, b ManagedMailbox) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(strings.ToLower(a.User), strings.ToLower(b.User)))
	})
	return out, nil
}

// MailboxListFile is a MailboxLister that reads a MailboxFile at each
// call.
type MailboxListFile struct {
	path string
}

// NewMailboxListFile lists the mailboxes of the file at path.
func NewMailboxListFile(path string) *MailboxListFile { return &MailboxListFile{path: path} }

// ListMailboxes reads the file and checks it with NewMailboxList.
func (f *MailboxListFile) ListMailboxes(context.Context) ([]ManagedMailbox, error) {
	return sources.LoadFile(f.path, "EWS mailbox list", func(file MailboxFile) ([]ManagedMailbox, error) {
		return NewMailboxList(file.Mailboxes)
	})
}
