package credentials

import (
	"errors"
	"testing"
)

func TestScopeAllows(t *testing.T) {
	tests := []struct {
		name   string
		scope  Scope
		role   Role
		tenant string
		want   bool
	}{
		{"own tenant, own role", Scope{Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, RoleEvents, "a.example", true},
		{"own tenant, spelled in capitals", Scope{Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, RoleEvents, "A.Example", true},
		{"other tenant", Scope{Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, RoleEvents, "b.example", false},
		{"other role", Scope{Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, RoleSubscriptions, "a.example", false},
		{"admin has every role", Scope{Tenants: []string{"a.example"}, Roles: []Role{RoleAdmin}}, RoleRead, "a.example", true},
		{"admin stays in its tenants", Scope{Tenants: []string{"a.example"}, Roles: []Role{RoleAdmin}}, RoleRead, "b.example", false},
		{"every tenant", Scope{Tenants: []string{AllTenants}, Roles: []Role{RoleEvents}}, RoleEvents, "b.example", true},
		{"listed tenants", Scope{Tenants: []string{"a.example", "c.example"}, Roles: []Role{RoleRead}}, RoleRead, "c.example", true},
		{"empty scope", Scope{}, RoleEvents, "a.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.scope.Allows(tt.role, tt.tenant); got != tt.want {
				t.Fatalf("Allows(%s, %s) = %v, want %v", tt.role, tt.tenant, got, tt.want)
			}
		})
	}
}

func TestSpecNormalize(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"bearer", Spec{Kind: KindBearer, Tenants: []string{"A.example."}, Roles: []Role{RoleEvents, RoleEvents}}, true},
		{"every tenant", Spec{Kind: KindBearer, Tenants: []string{AllTenants}, Roles: []Role{RoleAdmin}}, true},
		{"basic", Spec{Kind: KindBasic, User: "dovecot", Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, true},
		{"no tenant", Spec{Kind: KindBearer, Roles: []Role{RoleEvents}}, false},
		{"no role", Spec{Kind: KindBearer, Tenants: []string{"a.example"}}, false},
		{"bad tenant", Spec{Kind: KindBearer, Tenants: []string{"a b"}, Roles: []Role{RoleEvents}}, false},
		{"bad role", Spec{Kind: KindBearer, Tenants: []string{"a.example"}, Roles: []Role{"root"}}, false},
		{"basic without user", Spec{Kind: KindBasic, Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, false},
		{"basic user with colon", Spec{Kind: KindBasic, User: "a:b", Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, false},
		{"bearer with user", Spec{Kind: KindBearer, User: "x", Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, false},
		{"unknown kind", Spec{Kind: "cookie", Tenants: []string{"a.example"}, Roles: []Role{RoleEvents}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.spec.normalize()
			if (err == nil) != tt.ok {
				t.Fatalf("normalize: %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			if tt.name == "bearer" && (got.Tenants[0] != "a.example" || len(got.Roles) != 1) {
				t.Fatalf("not normalised: %+v", got)
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	secret, err := newSecret(KindBearer, "abc123")
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := bearerID(secret); !ok || id != "abc123" {
		t.Fatalf("bearerID(%q) = %q, %v", secret, id, ok)
	}
	c := Credential{SecretHash: hashOf(secret)}
	if !c.matches(secret) || c.matches(secret+"x") || c.matches("") {
		t.Fatal("matches does not tell the secret from others")
	}
	for _, bad := range []string{"", "ppk_", "ppk_.x", "token", "ppk_abc"} {
		if _, ok := bearerID(bad); ok {
			t.Errorf("bearerID(%q) found an id", bad)
		}
	}
}
