package graph

import (
	"context"
	"errors"
	"testing"
)

func TestUserIndex(t *testing.T) {
	d, err := NewStaticDirectory([]DirectoryEntry{
		{UserID: "alice@fabrikam.com", Tenant: "fabrikam.com", Address: "alice@fabrikam.com"},
		{UserID: aliceID, TenantID: tenantID, Tenant: "fabrikam.com", Address: "Alice@fabrikam.com"},
		{UserID: "zed@fabrikam.com", Tenant: "fabrikam.com", Address: "bob@fabrikam.com"},
		{UserID: "bob@fabrikam.com", Tenant: "fabrikam.com", Address: "bob@fabrikam.com"},
		{UserID: "alice@contoso.com", Tenant: "contoso.com", Address: "alice@fabrikam.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	x := NewUserIndex(d)
	tests := []struct {
		tenant, address string
		want            UserRef
		err             error
	}{
		{"fabrikam.com", "alice@fabrikam.com", UserRef{ID: aliceID, TenantID: tenantID}, nil},
		{"Fabrikam.COM.", "ALICE@fabrikam.com", UserRef{ID: aliceID, TenantID: tenantID}, nil},
		{"fabrikam.com", "bob@fabrikam.com", UserRef{ID: "bob@fabrikam.com"}, nil},
		{"contoso.com", "alice@fabrikam.com", UserRef{ID: "alice@contoso.com"}, nil},
		{"contoso.com", "bob@fabrikam.com", UserRef{}, ErrUnknownUser},
		{"fabrikam.com", "", UserRef{}, ErrUnknownUser},
	}
	for _, tt := range tests {
		got, err := x.FindUser(context.Background(), tt.tenant, tt.address)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("%s %s: got %+v, %v", tt.tenant, tt.address, got, err)
		}
	}
}
