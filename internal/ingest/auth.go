package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/pushproxy/pushproxy/internal/credentials"
)

// Realm is the realm named in ingest's WWW-Authenticate challenges.
const Realm = "pushproxy"

// An Authenticator checks the credentials of a request.
type Authenticator interface {
	// Authenticate reports whether r carries valid credentials.
	Authenticate(r *http.Request) bool
	// Challenge is the WWW-Authenticate value of a 401 answer.
	Challenge() string
}

// A Scoper is an Authenticator that also says what the credentials may
// reach. RequireAuth stores the scope in the request's context
// (credentials.NewContext); an Authenticator that is not a Scoper acts for
// every tenant, with the events role.
type Scoper interface {
	Authenticator
	// Scope returns the scope of the request's credentials, or false when
	// they are missing or wrong.
	Scope(r *http.Request) (credentials.Scope, bool)
}

// legacyScope is the scope of a credential given by flag or file: every
// tenant, with the roles of the source it opens.
func legacyScope(id string, roles ...credentials.Role) credentials.Scope {
	return credentials.Scope{ID: id, Tenants: []string{credentials.AllTenants}, Roles: roles}
}

// secret is a credential kept as its SHA-256, so that comparing takes the
// same time whatever the length or content of the candidate.
type secret [sha256.Size]byte

func newSecret(s string) secret { return sha256.Sum256([]byte(s)) }

// matches reports in constant time whether candidate is the secret.
func (s *secret) matches(candidate string) int {
	c := newSecret(candidate)
	return subtle.ConstantTimeCompare(s[:], c[:])
}

// Bearer accepts "Authorization: Bearer <token>" with a scoped credential
// of its index (pushctl credentials) or one of its configured tokens,
// which act as admin of every tenant.
type Bearer struct {
	tokens atomic.Pointer[[]secret]
	index  *credentials.Index
}

// NewBearer returns an Authenticator for configured tokens, or nil (the
// source is disabled) when there is none.
func NewBearer(tokens ...string) Authenticator { return NewScopedBearer(nil, tokens...) }

// NewScopedBearer returns an Authenticator for the scoped credentials of
// index (nil: none) and the configured tokens, or nil when there are
// neither.
func NewScopedBearer(index *credentials.Index, tokens ...string) Authenticator {
	b := newBearer(index, tokens...)
	if b == nil {
		return nil
	}
	return b
}

// newBearer is NewScopedBearer's *Bearer, nil when there is nothing to
// accept.
func newBearer(index *credentials.Index, tokens ...string) *Bearer {
	b := &Bearer{index: index}
	if n := b.SetTokens(tokens...); n == 0 && index == nil {
		return nil
	}
	return b
}

// SetTokens replaces the configured tokens (a reloaded token file) and
// returns how many there are now; requests in flight finish with the old
// ones.
func (b *Bearer) SetTokens(tokens ...string) int {
	var set []secret
	for _, t := range tokens {
		if t != "" {
			set = append(set, newSecret(t))
		}
	}
	b.tokens.Store(&set)
	return len(set)
}

// Authenticate reports whether the request's token is valid.
func (b *Bearer) Authenticate(r *http.Request) bool {
	_, ok := b.Scope(r)
	return ok
}

// Scope finds the request's token among the scoped credentials, then
// compares it with every configured token, without stopping at the first
// match.
func (b *Bearer) Scope(r *http.Request) (credentials.Scope, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return credentials.Scope{}, false
	}
	token = strings.TrimSpace(token)
	if b.index != nil {
		if sc, ok := b.index.Bearer(token); ok {
			return sc, true
		}
	}
	match, which := 0, 0
	tokens := *b.tokens.Load()
	for i := range tokens {
		m := tokens[i].matches(token)
		match |= m
		which += m * (i + 1)
	}
	if match != 1 {
		return credentials.Scope{}, false
	}
	return legacyScope("token-"+strconv.Itoa(which), credentials.RoleAdmin), true
}

// Challenge asks for a Bearer token.
func (b *Bearer) Challenge() string { return `Bearer realm="` + Realm + `"` }

// Basic accepts HTTP Basic credentials: a scoped basic credential of its
// index (pushctl credentials create --kind basic), or the one configured
// user, which posts events for every tenant.
type Basic struct {
	configured atomic.Pointer[basicPair]
	index      *credentials.Index
}

// basicPair is the configured user and password.
type basicPair struct{ user, password secret }

// NewBasic returns an Authenticator for user and password, or nil (the
// source is disabled) when either is empty.
func NewBasic(user, password string) Authenticator { return NewScopedBasic(nil, user, password) }

// NewScopedBasic returns an Authenticator for the basic credentials of
// index (nil: none) and the configured user and password, or nil when
// there are neither.
func NewScopedBasic(index *credentials.Index, user, password string) Authenticator {
	b := newBasic(index, user, password)
	if b == nil {
		return nil
	}
	return b
}

// newBasic is NewScopedBasic's *Basic, nil when there is nothing to accept.
func newBasic(index *credentials.Index, user, password string) *Basic {
	b := &Basic{index: index}
	if !b.SetPassword(user, password) && index == nil {
		return nil
	}
	return b
}

// SetPassword replaces the configured user and password (a reloaded
// password file); with either empty there is none. It reports whether one
// is configured now.
func (b *Basic) SetPassword(user, password string) bool {
	if user == "" || password == "" {
		b.configured.Store(nil)
		return false
	}
	b.configured.Store(&basicPair{user: newSecret(user), password: newSecret(password)})
	return true
}

// Authenticate reports whether the request's credentials are valid.
func (b *Basic) Authenticate(r *http.Request) bool {
	_, ok := b.Scope(r)
	return ok
}

// Scope checks the user and password, the configured ones in constant
// time.
func (b *Basic) Scope(r *http.Request) (credentials.Scope, bool) {
	user, password, ok := r.BasicAuth()
	if !ok {
		return credentials.Scope{}, false
	}
	if b.index != nil {
		if sc, ok := b.index.Basic(user, password); ok {
			return sc, true
		}
	}
	if p := b.configured.Load(); p != nil && p.user.matches(user)&p.password.matches(password) == 1 {
		return legacyScope("dovecot-user", credentials.RoleEvents), true
	}
	return credentials.Scope{}, false
}

// Challenge asks for Basic credentials.
func (b *Basic) Challenge() string { return `Basic realm="` + Realm + `", charset="UTF-8"` }
