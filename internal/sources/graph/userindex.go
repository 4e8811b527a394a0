package graph

import (
	"context"
	"strings"
)

// UserRef is the Graph identity of a pushproxy user: the user id to put
// in /users/{id} and, when the directory names it, the Entra tenant id.
type UserRef struct {
	ID       string
	TenantID string
}

// UserFinder maps a pushproxy user (tenant domain and address) back
// to its Graph user. FindUser returns ErrUnknownUser (possibly
// wrapped) for a user it does not know; any other error means it could
// not tell.
type UserFinder interface {
	FindUser(ctx context.Context, tenant, address string) (UserRef, error)
}

// UserIndex is a StaticDirectory read backwards: from tenant and address
// to the Graph user. It never changes after it is built, so it is safe
// for concurrent use.
type UserIndex struct {
	users map[string]UserRef
}

// NewUserIndex indexes the users of d by tenant and address (both
// compared case-insensitively). When two user ids name the same user (its
// object id and its user principal name, say), the object id is taken, so
// the choice does not depend on the order of the file.
func NewUserIndex(d *StaticDirectory) *UserIndex {
	x := &UserIndex{users: make(map[string]UserRef, len(d.users))}
	for id, u := range d.users {
		key := userKey(u.user.Tenant, u.user.Address)
		if old, dup := x.users[key]; dup && !preferUserID(id, old.ID) {
			continue
		}
		x.users[key] = UserRef{ID: id, TenantID: u.tenantID}
	}
	return x
}

// FindUser finds the Graph user of address at tenant.
func (x *UserIndex) FindUser(_ context.Context, tenant, address string) (UserRef, error) {
	u, ok := x.users[userKey(tenant, address)]
	if !ok {
		return UserRef{}, ErrUnknownUser
	}
	return u, nil
}

// userKey is the index key of a user: the tenant as events normalise it
// and the address in lower case.
func userKey(tenant, address string) string {
	tenant = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(tenant)), ".")
	return tenant + "\x00" + strings.ToLower(strings.TrimSpace(address))
}

// preferUserID reports whether user id a is a better name than b: an
// object id (a GUID) over anything else, then the smaller string.
func preferUserID(a, b string) bool {
	if isGUID(a) != isGUID(b) {
		return isGUID(a)
	}
	return a < b
}
