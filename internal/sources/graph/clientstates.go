package graph

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
)

// MaxClientState is the longest clientState Graph takes, in characters.
const MaxClientState = 128

// clientStates are the Manager's clientState secrets, written as
// Config.ClientStates: a new subscription gets the last one that may
// report for its user's tenant, and a lifecycle notification must carry
// one of them.
type clientStates struct {
	entries []clientState
}

type clientState struct {
	// tenants may be reported for; nil: any.
	tenants []string
	secret  string
	hash    [sha256.Size]byte
}

// newClientStates reads the configured secrets; at least one is needed,
// each at most MaxClientState characters.
func newClientStates(list []string) (*clientStates, error) {
	c := &clientStates{}
	for _, cs := range list {
		tenants, secret := splitClientState(cs)
		if secret == "" {
			continue
		}
		if len([]rune(secret)) > MaxClientState {
			return nil, fmt.Errorf("a clientState secret is longer than Graph's limit of %d characters", MaxClientState)
		}
		c.entries = append(c.entries, clientState{tenants: tenants, secret: secret, hash: sha256.Sum256([]byte(secret))})
	}
	if len(c.entries) == 0 {
		return nil, errors.New("at least one clientState secret is required")
	}
	return c, nil
}

// current is the secret a new subscription of tenant gets, the last
// configured one that may report for it, with its version: a short hash
// that the store keeps instead of the secret. ok is false when none may.
func (c *clientStates) current(tenant string) (secret, version string, ok bool) {
	for i := len(c.entries) - 1; i >= 0; i-- {
		e := &c.entries[i]
		if e.tenants == nil || slices.Contains(e.tenants, tenant) {
			return e.secret, clientStateVersion(e.secret), true
		}
	}
	return "", "", false
}

// check reports whether state is one of the secrets, comparing with each
// in constant time, and the tenants it may report for (nil: any).
func (c *clientStates) check(state string) (tenants []string, ok bool) {
	got := sha256.Sum256([]byte(state))
	found := -1
	for i := range c.entries {
		if subtle.ConstantTimeCompare(got[:], c.entries[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, false
	}
	return c.entries[found].tenants, true
}

// clientStateVersion names a secret without revealing it: 64 bits of a
// hash, enough to tell a rotated secret from the one a subscription has.
func clientStateVersion(secret string) string {
	return shortHash("pushproxy graph clientState", secret)
}

// shortHash is 64 bits of SHA-256 over a purpose and a value, in hex.
func shortHash(purpose, value string) string {
	h := sha256.Sum256([]byte(purpose + "\x00" + value))
	return hex.EncodeToString(h[:8])
}
