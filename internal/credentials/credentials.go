// Package credentials holds ingest's scoped credentials: each belongs to
// one tenant, a listed set of tenants, or all ("*"), and carries roles
// (events, subscriptions, read, admin). Secrets are generated here, shown
// once, and kept only as their SHA-256 in the KV bucket "credentials";
// every ingest watches the bucket, so a credential created, rotated or
// revoked with pushctl takes effect within a second, without a restart.
//
// A Bearer secret reads "ppk_<id>.<random>": the id finds the credential,
// the whole secret is compared in constant time with the stored hash. A
// Basic credential (Dovecot) has a user name and a generated password.
package credentials

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
)

// Role is what a credential may do.
type Role string

// Roles.
const (
	// RoleEvents posts mailbox events.
	RoleEvents Role = "events"
	// RoleSubscriptions subscribes and unsubscribes devices.
	RoleSubscriptions Role = "subscriptions"
	// RoleRead lists subscriptions (device tokens masked).
	RoleRead Role = "read"
	// RoleAdmin does all of the above, and may see device tokens.
	RoleAdmin Role = "admin"
)

// AllTenants in a credential's tenants means every tenant.
const AllTenants = "*"

// Roles lists the roles, for help texts.
var Roles = []Role{RoleEvents, RoleSubscriptions, RoleRead, RoleAdmin}

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("unknown role %q (want one of events, subscriptions, read, admin)", s)
	}
	return r, nil
}

// Kind is how a credential is presented.
type Kind string

// Kinds.
const (
	// KindBearer is "Authorization: Bearer <secret>" (native API,
	// subscriptions API).
	KindBearer Kind = "bearer"
	// KindBasic is HTTP Basic user and password (Dovecot).
	KindBasic Kind = "basic"
	// KindGraph is the clientState of Microsoft Graph subscriptions:
	// Graph sends it back in every change notification. It may only post
	// events.
	KindGraph Kind = "graph"
	// KindEWS is the key of the URL of Exchange EWS push subscriptions
	// (?key=<secret>): Exchange sends no credentials. It may only post
	// events.
	KindEWS Kind = "ews"
)

// Scope is what an authenticated request may reach: the credential's id
// (for logs), its tenants and its roles.
type Scope struct {
	ID      string
	Tenants []string
	Roles   []Role
}

// Allows reports whether the scope may act in role on tenant. Admin allows
// every role.
func (s Scope) Allows(role Role, tenant string) bool {
	if !slices.Contains(s.Roles, role) && !slices.Contains(s.Roles, RoleAdmin) {
		return false
	}
	return slices.Contains(s.Tenants, AllTenants) || slices.Contains(s.Tenants, strings.ToLower(tenant))
}

// IsAdmin reports whether the scope has the admin role.
func (s Scope) IsAdmin() bool { return slices.Contains(s.Roles, RoleAdmin) }

// Credential is one stored credential. Its secret is not stored, only its
// SHA-256.
type Credential struct {
	ID          string    `json:"id"`
	Kind        Kind      `json:"kind"`
	User        string    `json:"user,omitempty"`
	Tenants     []string  `json:"tenants"`
	Roles       []Role    `json:"roles"`
	Description string    `json:"description,omitempty"`
	SecretHash  string    `json:"secretHash"`
	Created     time.Time `json:"created"`
	Rotated     time.Time `json:"rotated,omitzero"`
}

// Scope is the credential's scope.
func (c Credential) Scope() Scope {
	return Scope{ID: c.ID, Tenants: slices.Clone(c.Tenants), Roles: slices.Clone(c.Roles)}
}

// matches compares a presented secret with the stored hash in constant
// time.
func (c Credential) matches(secret string) bool {
	want, err := hex.DecodeString(c.SecretHash)
	if err != nil {
		return false
	}
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(want, got[:]) == 1
}

// Spec is what pushctl asks for when it creates a credential.
type Spec struct {
	Kind        Kind
	User        string
	Tenants     []string
	Roles       []Role
	Description string
}

// Errors of the package.
var (
	// ErrNotFound means no credential has the id.
	ErrNotFound = errors.New("no such credential")
	// ErrInvalid means a spec is incomplete or wrong.
	ErrInvalid = errors.New("invalid credential")
)

// normalize checks a spec and returns it with tenants lower-cased,
// de-duplicated and sorted.
func (s Spec) normalize() (Spec, error) {
	switch s.Kind {
	case KindBearer:
		if s.User != "" {
			return s, fmt.Errorf("%w: a bearer credential has no user name", ErrInvalid)
		}
	case KindBasic:
		if s.User == "" || strings.ContainsAny(s.User, ": \t") {
			return s, fmt.Errorf("%w: a basic credential needs a user name without colons or spaces", ErrInvalid)
		}
	case KindGraph, KindEWS:
		if s.User != "" {
			return s, fmt.Errorf("%w: a %s credential has no user name", ErrInvalid, s.Kind)
		}
		if len(s.Roles) == 0 {
			s.Roles = []Role{RoleEvents}
		}
		if len(s.Roles) != 1 || s.Roles[0] != RoleEvents {
			return s, fmt.Errorf("%w: a %s credential can only post events (role events)", ErrInvalid, s.Kind)
		}
	default:
		return s, fmt.Errorf("%w: kind %q (want bearer, basic, graph or ews)", ErrInvalid, s.Kind)
	}
	if len(s.Tenants) == 0 {
		return s, fmt.Errorf("%w: name at least one tenant (or %q for all)", ErrInvalid, AllTenants)
	}
	if len(s.Roles) == 0 {
		return s, fmt.Errorf("%w: name at least one role", ErrInvalid)
	}
	var tenants []string
	for _, t := range s.Tenants {
		t = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(t)), ".")
		if t != AllTenants {
			if err := events.ValidateTenant(t); err != nil {
				return s, fmt.Errorf("%w: tenant: %w", ErrInvalid, err)
			}
		}
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	s.Tenants = slices.Compact(tenants)
	for _, r := range s.Roles {
		if _, err := ParseRole(string(r)); err != nil {
			return s, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	slices.Sort(s.Roles)
	s.Roles = slices.Compact(s.Roles)
	return s, nil
}

// newID returns a short random credential id.
func newID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a credential id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// newSecret returns a fresh secret for a credential: for bearer, graph and
// ews credentials ppk_<id>.<random> (60 URL-safe characters, within
// Graph's 128 for a clientState), for basic ones the random part alone.
func newSecret(kind Kind, id string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a secret: %w", err)
	}
	random := base64.RawURLEncoding.EncodeToString(b)
	if kind == KindBasic {
		return random, nil
	}
	return BearerPrefix + id + "." + random, nil
}

// BearerPrefix starts every generated Bearer secret.
const BearerPrefix = "ppk_"

// bearerID extracts the credential id of a generated Bearer secret.
func bearerID(secret string) (string, bool) {
	rest, ok := strings.CutPrefix(secret, BearerPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, ".")
	return id, ok && id != ""
}

// hashOf is the stored form of a secret.
func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// contextKey is the context key of a request's scope.
type contextKey struct{}

// NewContext returns ctx carrying the scope of the request's credential.
func NewContext(ctx context.Context, s Scope) context.Context {
	return context.WithValue(ctx, contextKey{}, s)
}

// FromContext returns the scope NewContext stored, if any.
func FromContext(ctx context.Context) (Scope, bool) {
	s, ok := ctx.Value(contextKey{}).(Scope)
	return s, ok
}
