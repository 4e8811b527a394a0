package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
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

// secret is a credential kept as its SHA-256, so that comparing takes the
// same time whatever the length or content of the candidate.
type secret [sha256.Size]byte

func newSecret(s string) secret { return sha256.Sum256([]byte(s)) }

// matches reports in constant time whether candidate is the secret.
func (s *secret) matches(candidate string) int {
	c := newSecret(candidate)
	return subtle.ConstantTimeCompare(s[:], c[:])
}

// Bearer accepts "Authorization: Bearer <token>" with any of its tokens.
type Bearer struct {
	tokens []secret
}

// NewBearer returns an Authenticator for tokens, or nil (the source is
// disabled) when there is none.
func NewBearer(tokens ...string) Authenticator {
	b := &Bearer{}
	for _, t := range tokens {
		if t != "" {
			b.tokens = append(b.tokens, newSecret(t))
		}
	}
	if len(b.tokens) == 0 {
		return nil
	}
	return b
}

// Authenticate compares the request's token with every configured token,
// without stopping at the first match.
func (b *Bearer) Authenticate(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimSpace(token)
	match := 0
	for i := range b.tokens {
		match |= b.tokens[i].matches(token)
	}
	return match == 1
}

// Challenge asks for a Bearer token.
func (b *Bearer) Challenge() string { return `Bearer realm="` + Realm + `"` }

// Basic accepts HTTP Basic credentials of one user.
type Basic struct {
	user, password secret
}

// NewBasic returns an Authenticator for user and password, or nil (the
// source is disabled) when either is empty.
func NewBasic(user, password string) Authenticator {
	if user == "" || password == "" {
		return nil
	}
	return &Basic{user: newSecret(user), password: newSecret(password)}
}

// Authenticate compares both the user and the password in constant time.
func (b *Basic) Authenticate(r *http.Request) bool {
	user, password, ok := r.BasicAuth()
	if !ok {
		return false
	}
	return b.user.matches(user)&b.password.matches(password) == 1
}

// Challenge asks for Basic credentials.
func (b *Basic) Challenge() string { return `Basic realm="` + Realm + `", charset="UTF-8"` }
