package records_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/sources/records"
)

// TestUserKey: the key of a user (the Graph and EWS SubscriptionKey) is a
// NATS KV key, the same whatever the case of the tenant and the address
// and a trailing dot, another for another address, and starts with the
// tenant's token.
func TestUserKey(t *testing.T) {
	valid := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`) // NATS KV keys
	tests := []struct {
		tenant, user string
		sameAs       int    // index of a case with the same key, -1 for none
		prefix       string // the key starts with it
	}{
		{"fabrikam.com", "alice@fabrikam.com", -1, "fabrikam_com."},
		{"Fabrikam.COM.", "ALICE@fabrikam.com", 0, "fabrikam_com."},
		{"fabrikam.com", "bob@fabrikam.com", -1, "fabrikam_com."},
		{"xn--bcher-kva.example", "jörg@xn--bcher-kva.example", -1, "xn--bcher-kva_example."},
	}
	keys := make([]string, len(tests))
	for i, tt := range tests {
		keys[i] = records.UserKey(tt.tenant, tt.user)
		if !valid.MatchString(keys[i]) || len(keys[i]) > 255 {
			t.Errorf("%s %s: key %q is not a KV key", tt.tenant, tt.user, keys[i])
		}
		if !strings.HasPrefix(keys[i], tt.prefix) {
			t.Errorf("key %q does not start with %q", keys[i], tt.prefix)
		}
		for j := range i {
			if same := keys[i] == keys[j]; same != (tt.sameAs == j) {
				t.Errorf("keys of cases %d and %d: %q, %q", i, j, keys[i], keys[j])
			}
		}
	}
}
