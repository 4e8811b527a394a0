package graph

import (
	"cmp"
	"context"
	"slices"
)

// ManagedUser is a user of the directory whose inbox the Manager keeps a
// Graph subscription on: its pushproxy identity (tenant domain and
// address) and its Graph identity.
type ManagedUser struct {
	Tenant  string
	Address string
	UserRef
}

// UserLister lists the users to keep subscriptions for. The Manager asks
// again every ManagerConfig.ResyncInterval, so a directory that changes
// while running is followed.
type UserLister interface {
	ListUsers(ctx context.Context) ([]ManagedUser, error)
}

// ListUsers lists the users of the directory, one per tenant and address
// (compared case-insensitively): when two user ids name the same user,
// the one NewUserIndex takes. They are sorted by tenant, then address.
func (d *StaticDirectory) ListUsers(context.Context) ([]ManagedUser, error) {
	byKey := make(map[string]ManagedUser, len(d.users))
	for id, u := range d.users {
		key := userKey(u.user.Tenant, u.user.Address)
		if old, dup := byKey[key]; dup && !preferUserID(id, old.ID) {
			continue
		}
		byKey[key] = ManagedUser{Tenant: u.user.Tenant, Address: u.user.Address, UserRef: UserRef{ID: id, TenantID: u.tenantID}}
	}
	out := make([]ManagedUser, 0, len(byKey))
	for _, u := range byKey {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b ManagedUser) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Address, b.Address))
	})
	return out, nil
}
