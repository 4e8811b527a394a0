package graph

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// User is the pushproxy identity of a Graph user: the tenant domain and
// the address that events carry.
type User struct {
	Tenant  string
	Address string
}

// ErrUnknownUser is returned by a UserDirectory for a user it does not know.
var ErrUnknownUser = errors.New("unknown Graph user")

// UserDirectory maps the user of a notification's resource to a User.
// tenantID is the notification's tenantId (a GUID, possibly empty); userID
// is the user segment of the resource. LookupUser returns ErrUnknownUser
// (possibly wrapped) for a user it does not know; any other error means it
// could not tell, and Graph is asked to retry later.
type UserDirectory interface {
	LookupUser(ctx context.Context, tenantID, userID string) (User, error)
}

// DirectoryEntry is one user in a directory file.
type DirectoryEntry struct {
	// UserID is the user's Graph object id (a GUID), as it appears in
	// notification resources; a user principal name also works when the
	// resources name the user that way. Compared case-insensitively.
	UserID string `json:"user_id"`
	// TenantID, when set, is the Azure AD tenant id (GUID) the user belongs
	// to: a notification from another tenant does not match the entry.
	TenantID string `json:"tenant_id,omitempty"`
	// Tenant is the organisation's domain, e.g. fabrikam.com.
	Tenant string `json:"tenant"`
	// Address is the user's mail address, the user of the events.
	Address string `json:"address"`
}

// DirectoryFile is the JSON form of a static directory:
//
//	{"users":[{"user_id":"<object id>","tenant_id":"<tenant GUID>",
//	  "tenant":"fabrikam.com","address":"alice@fabrikam.com"}]}
type DirectoryFile struct {
	Users []DirectoryEntry `json:"users"`
}

// StaticDirectory is a UserDirectory held in memory. It never changes after
// it is built, so it is safe for concurrent use.
type StaticDirectory struct {
	users map[string]directoryUser
}

type directoryUser struct {
	tenantID string
	user     User
}

// NewStaticDirectory checks entries and builds a directory: every entry
// needs a user id without spaces, a valid tenant domain and address; user
// ids must be unique.
func NewStaticDirectory(entries []DirectoryEntry) (*StaticDirectory, error) {
	d := &StaticDirectory{users: make(map[string]directoryUser, len(entries))}
	for i, e := range entries {
		id := strings.ToLower(strings.TrimSpace(e.UserID))
		if id == "" || checkToken(id) != nil || len(id) > 320 {
			return nil, fmt.Errorf("user %d: user_id must be a Graph user id without spaces", i+1)
		}
		where := fmt.Sprintf("user %q", id)
		tenant := strings.ToLower(strings.TrimSpace(e.Tenant))
		if err := events.ValidateTenant(tenant); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		addr := strings.TrimSpace(e.Address)
		if err := events.ValidateAddress("address", addr); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if _, dup := d.users[id]; dup {
			return nil, fmt.Errorf("%s: listed twice", where)
		}
		d.users[id] = directoryUser{tenantID: strings.ToLower(strings.TrimSpace(e.TenantID)), user: User{Tenant: tenant, Address: addr}}
	}
	return d, nil
}

// LoadDirectoryFile reads a DirectoryFile from path and builds a directory.
// Unknown fields are an error, so a typo does not silently drop a setting.
func LoadDirectoryFile(path string) (*StaticDirectory, error) {
	return sources.LoadFile(path, "Graph user directory", func(f DirectoryFile) (*StaticDirectory, error) {
		return NewStaticDirectory(f.Users)
	})
}

// LookupUser finds userID, case-insensitively. A resource may write the
// user as "{object id}@{tenant id}"; when that form is not listed, the
// object id before the @ is tried, provided the part after it is a GUID.
// An entry with a tenant id matches only notifications of that tenant.
func (d *StaticDirectory) LookupUser(_ context.Context, tenantID, userID string) (User, error) {
	id := strings.ToLower(userID)
	u, ok := d.users[id]
	if !ok {
		if obj, tenant, found := strings.Cut(id, "@"); found && isGUID(tenant) {
			u, ok = d.users[obj]
		}
	}
	if !ok || u.tenantID != "" && !strings.EqualFold(u.tenantID, tenantID) {
		return User{}, ErrUnknownUser
	}
	return u.user, nil
}

// Len is the number of users in the directory.
func (d *StaticDirectory) Len() int { return len(d.users) }

// isGUID reports whether s looks like 8-4-4-4-12 hex digits.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
