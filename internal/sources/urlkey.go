package sources

import (
	"crypto/sha256"
	"crypto/subtle"
)

// URLKey is the secret a mail server carries in its notification URL
// (?key=...), for mail systems that cannot authenticate otherwise (EWS
// push, Graph webhooks). It is kept as a SHA-256 hash and compared in
// constant time. The zero URLKey is no key.
type URLKey struct {
	set bool
	sum [sha256.Size]byte
}

// NewURLKey keeps secret; an empty secret is no key.
func NewURLKey(secret string) URLKey {
	if secret == "" {
		return URLKey{}
	}
	return URLKey{set: true, sum: sha256.Sum256([]byte(secret))}
}

// Set reports whether a key is configured.
func (k URLKey) Set() bool { return k.set }

// Matches reports whether given is the key; never when none is configured.
func (k URLKey) Matches(given string) bool {
	if !k.set {
		return false
	}
	got := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(got[:], k.sum[:]) == 1
}
