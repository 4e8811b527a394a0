package records

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/pushproxy/pushproxy/internal/events"
)

// UserKey is the key of a user's record: <tenant token>.<hash>, the
// tenant (lower case, without a trailing dot) as events.TenantToken writes
// it and 128 bits of SHA-256 of the address in lower case, in hex. It is a
// valid NATS KV key, and reveals no address.
func UserKey(tenant, address string) string {
	tenant = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(tenant)), ".")
	h := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(address))))
	return events.TenantToken(tenant) + "." + hex.EncodeToString(h[:16])
}
