package graph

import (
	"context"
	"reflect"
	"testing"
)

func TestStaticDirectoryListUsers(t *testing.T) {
	tests := []struct {
		name    string
		entries []DirectoryEntry
		want    []ManagedUser
	}{
		{"empty", nil, []ManagedUser{}},
		{"sorted by tenant and address, one per user, the object id preferred", []DirectoryEntry{
			{UserID: "zed@fabrikam.com", Tenant: "fabrikam.com", Address: "zed@fabrikam.com"},
			{UserID: "alice@fabrikam.com", Tenant: "fabrikam.com", Address: "alice@fabrikam.com"},
			{UserID: aliceID, TenantID: tenantID, Tenant: "fabrikam.com", Address: "Alice@fabrikam.com"},
			{UserID: "alice@contoso.com", Tenant: "contoso.com", Address: "alice@contoso.com"},
		}, []ManagedUser{
			{Tenant: "contoso.com", Address: "alice@contoso.com", UserRef: UserRef{ID: "alice@contoso.com"}},
			{Tenant: "fabrikam.com", Address: "Alice@fabrikam.com", UserRef: UserRef{ID: aliceID, TenantID: tenantID}},
			{Tenant: "fabrikam.com", Address: "zed@fabrikam.com", UserRef: UserRef{ID: "zed@fabrikam.com"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewStaticDirectory(tt.entries)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.ListUsers(context.Background())
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
