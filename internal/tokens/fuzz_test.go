package tokens

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerify checks that verifying arbitrary input never panics, that every
// failure is a rejection (the partner source never fails here), and that an
// accepted token really is RS256 signed by the registered key: checked with
// crypto/rsa directly, not through the JWT library.
//
// Seeds: testdata/fuzz/FuzzVerify (a valid token at testNow, alg none, HMAC
// keyed with the public certificate, tampered and garbage tokens) plus the
// ones added below.
func FuzzVerify(f *testing.F) {
	cert := loadTestCert(f, "s2s")
	now := func() time.Time { return testNow }
	ver := newTestVerifier(f, newTestRegistry(f, fabrikamPartner(cert)), now)
	pub := rsaKey(f, cert)

	// The same token as the valid-rs256 seed file: signing is deterministic.
	valid := mustToken(f, newTestIssuer(f, cert, now))
	f.Add(valid)
	f.Add(strings.Join(strings.Split(valid, ".")[:2], ".") + ".")
	f.Add("")

	f.Fuzz(func(t *testing.T, raw string) {
		claims, err := ver.Verify(context.Background(), raw)
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("Verify(%q) failed without a rejection: %v", raw, err)
			}
			if claims != nil {
				t.Fatalf("Verify(%q) returned claims with an error", raw)
			}
			return
		}
		parts := strings.Split(raw, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted %q with %d segments", raw, len(parts))
		}
		var header struct {
			Alg string `json:"alg"`
		}
		if h, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(h, &header) != nil || header.Alg != "RS256" {
			t.Fatalf("accepted %q whose header is not RS256", raw)
		}
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatalf("accepted %q with an undecodable signature", raw)
		}
		digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			t.Fatalf("accepted %q not signed by the registered key: %v", raw, err)
		}
		if claims.Organization != "fabrikam.com" || claims.Thumbprint != s2sThumbprint {
			t.Fatalf("accepted %q for %+v", raw, claims)
		}
	})
}
