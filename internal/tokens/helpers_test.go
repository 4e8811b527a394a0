package tokens

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Names used across the tests.
const (
	relayPrincipal = "c6a4e1b2-6a57-4c4c-9a56-8f1e7c3b9d10"
	relayHost      = "relay.pushproxy.test"
	fabrikamRealm  = "8c1f2a3e-4b5d-4e6f-8a9b-0c1d2e3f4a5b"
	fabrikamIssuer = "5d3b0c64-1e2f-4a3b-9c8d-7e6f5a4b3c2d"
	contosoRealm   = "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
)

// testNow is the fixed "current time" of the tests; the openssl test
// certificates are valid from 2025 to 2125.
var testNow = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// loadTestCert loads testdata/<name>.pem with its key testdata/<name>.key.
func loadTestCert(t testing.TB, name string) *Certificate {
	t.Helper()
	c, err := LoadPEM(filepath.Join("testdata", name+".pem"), filepath.Join("testdata", name+".key"))
	if err != nil {
		t.Fatalf("loading test certificate %s: %v", name, err)
	}
	return c
}

// fabrikamPartner registers certs for fabrikam.com without date limits.
func fabrikamPartner(certs ...*Certificate) Partner {
	p := Partner{Organization: "fabrikam.com", Realm: fabrikamRealm, IssuerID: fabrikamIssuer}
	for _, c := range certs {
		p.Certificates = append(p.Certificates, RegisteredCert{Cert: c.X509})
	}
	return p
}

// newTestRegistry returns a registry holding partners.
func newTestRegistry(t testing.TB, partners ...Partner) *Registry {
	t.Helper()
	r := NewRegistry()
	for _, p := range partners {
		if err := r.Put(p); err != nil {
			t.Fatalf("registering %s: %v", p.Organization, err)
		}
	}
	return r
}

// newTestVerifier returns a verifier for the test relay over partners.
func newTestVerifier(t testing.TB, partners PartnerSource, now func() time.Time) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifierOptions{PrincipalID: relayPrincipal, Host: relayHost, Partners: partners, Now: now})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// newTestIssuer returns a fabrikam issuer signing with cert.
func newTestIssuer(t testing.TB, cert *Certificate, now func() time.Time) *Issuer {
	t.Helper()
	i, err := NewIssuer(cert, IssuerOptions{
		IssuerID: fabrikamIssuer, Realm: fabrikamRealm, PrincipalID: relayPrincipal, Host: relayHost, Now: now,
	})
	if err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	return i
}

// validClaims are the claims a fabrikam issuer would send at now.
func validClaims(now time.Time) jwt.MapClaims {
	iss := fabrikamIssuer + "@" + fabrikamRealm
	return jwt.MapClaims{
		"aud":                  relayPrincipal + "/" + relayHost + "@" + fabrikamRealm,
		"iss":                  iss,
		"nameid":               iss,
		"trustedfordelegation": "true",
		"nbf":                  now.Unix(),
		"exp":                  now.Add(time.Hour).Unix(),
	}
}

// craft signs a token with an arbitrary header and claims. The header is
// used as given (nothing added), so it can lie about alg or omit x5t.
func craft(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header = header
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("crafting token: %v", err)
	}
	return s
}

// rs256Header is the header an issuer with cert writes.
func rs256Header(cert *Certificate) map[string]any {
	return map[string]any{"typ": "JWT", "alg": "RS256", "x5t": cert.X5T()}
}
