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
	"sync"
	"testing"
	"time"
)

// TestTokenFormat decodes an issued token by hand (without the JWT library)
// and checks it against the documented format.
func TestTokenFormat(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	tok, err := newTestIssuer(t, cert, func() time.Time { return testNow }).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	seg := func(i int) []byte {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		return b
	}
	if got, want := string(seg(0)), `{"alg":"RS256","typ":"JWT","x5t":"`+s2sX5T+`"}`; got != want {
		t.Errorf("header = %s\nwant     %s", got, want)
	}
	// Epoch seconds must be JSON integers, so decode numbers exactly.
	dec := json.NewDecoder(strings.NewReader(string(seg(1))))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		t.Fatal(err)
	}
	iss := fabrikamIssuer + "@" + fabrikamRealm
	want := map[string]any{
		"aud":                  relayPrincipal + "/" + relayHost + "@" + fabrikamRealm,
		"iss":                  iss,
		"nameid":               iss,
		"trustedfordelegation": "true",
		"nbf":                  json.Number("1906545600"), // 2030-06-01T12:00:00Z
		"exp":                  json.Number("1906549200"), // one hour later
	}
	if len(claims) != len(want) {
		t.Errorf("claims = %v, want exactly %v", claims, want)
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %#v, want %#v", k, claims[k], v)
		}
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(rsaKey(t, cert), crypto.SHA256, digest[:], seg(2)); err != nil {
		t.Errorf("signature does not verify as RSASSA-PKCS1-v1_5 SHA-256: %v", err)
	}
}

func TestIssuerCache(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	tests := []struct {
		name     string
		lifetime time.Duration
		renewAt  time.Duration // age at which a new token is signed
	}{
		{"default one hour renews with a quarter left", 0, 45 * time.Minute},
		{"24 hours renews with six hours left", 24 * time.Hour, 18 * time.Hour},
		{"10 minutes renews with five minutes left", 10 * time.Minute, 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(testNow)
			iss, err := NewIssuer(cert, IssuerOptions{
				IssuerID: fabrikamIssuer, Realm: fabrikamRealm, PrincipalID: relayPrincipal, Host: relayHost,
				Lifetime: tt.lifetime, Now: clock.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			ver := newTestVerifier(t, newTestRegistry(t, fabrikamPartner(cert)), clock.Now)
			ctx := context.Background()
			first := mustToken(t, iss)

			clock.Set(testNow.Add(tt.renewAt - time.Second))
			if got := mustToken(t, iss); got != first {
				t.Fatal("token renewed before the renewal point")
			}
			if _, err := ver.Verify(ctx, first); err != nil {
				t.Fatalf("cached token no longer verifies when it is handed out: %v", err)
			}

			clock.Set(testNow.Add(tt.renewAt))
			second := mustToken(t, iss)
			if second == first {
				t.Fatal("token not renewed at the renewal point")
			}
			c, err := ver.Verify(ctx, second)
			if err != nil {
				t.Fatal(err)
			}
			if !c.NotBefore.Equal(testNow.Add(tt.renewAt)) {
				t.Errorf("renewed token nbf = %v, want %v", c.NotBefore, testNow.Add(tt.renewAt))
			}
		})
	}
}

func mustToken(t testing.TB, iss *Issuer) string {
	t.Helper()
	tok, err := iss.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestNewIssuerRefuses(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	ok := IssuerOptions{IssuerID: fabrikamIssuer, Realm: fabrikamRealm, PrincipalID: relayPrincipal, Host: relayHost}
	with := func(f func(*IssuerOptions)) IssuerOptions { o := ok; f(&o); return o }
	tests := []struct {
		name string
		cert *Certificate
		opts IssuerOptions
		is   error
	}{
		{"no certificate", nil, ok, nil},
		{"public certificate only", &Certificate{X509: cert.X509}, ok, ErrNoPrivateKey},
		{"key of another certificate", &Certificate{X509: cert.X509, Key: loadTestCert(t, "contoso").Key}, ok, ErrKeyMismatch},
		{"no issuer id", cert, with(func(o *IssuerOptions) { o.IssuerID = "" }), nil},
		{"no realm", cert, with(func(o *IssuerOptions) { o.Realm = "" }), nil},
		{"no principal", cert, with(func(o *IssuerOptions) { o.PrincipalID = "" }), nil},
		{"no host", cert, with(func(o *IssuerOptions) { o.Host = "" }), nil},
		{"@ in issuer id", cert, with(func(o *IssuerOptions) { o.IssuerID = "a@b" }), nil},
		{"/ in host", cert, with(func(o *IssuerOptions) { o.Host = "relay/x" }), nil},
		{"space in realm", cert, with(func(o *IssuerOptions) { o.Realm = "a b" }), nil},
		{"lifetime too short", cert, with(func(o *IssuerOptions) { o.Lifetime = time.Minute }), nil},
		{"lifetime too long", cert, with(func(o *IssuerOptions) { o.Lifetime = 48 * time.Hour }), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewIssuer(tt.cert, tt.opts)
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("NewIssuer: %v, want %v", err, tt.is)
			}
		})
	}
}

func TestIssuerErrors(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	expired := newTestIssuer(t, cert, func() time.Time { return cert.X509.NotAfter.Add(time.Second) })
	if _, err := expired.Token(context.Background()); !errors.Is(err, ErrCertificateExpired) {
		t.Errorf("Token with an expired certificate: %v, want ErrCertificateExpired", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newTestIssuer(t, cert, nil).Token(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Token with a cancelled context: %v, want context.Canceled", err)
	}
}

// TestConcurrentIssueVerify issues and verifies from many goroutines while
// the clock moves and the registry changes, for the race detector.
func TestConcurrentIssueVerify(t *testing.T) {
	cert, next := loadTestCert(t, "s2s"), loadTestCert(t, "s2s-next")
	clock := newFakeClock(testNow)
	reg := newTestRegistry(t, fabrikamPartner(cert))
	iss := newTestIssuer(t, cert, clock.Now)
	ver := newTestVerifier(t, reg, clock.Now)

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				if g == 0 {
					clock.Advance(time.Minute)
				}
				if g == 1 && i%10 == 0 {
					// Re-register with the next certificate added: the
					// current one stays registered throughout.
					p := fabrikamPartner(cert, next)
					if i%20 == 0 {
						p = fabrikamPartner(cert)
					}
					if err := reg.Put(p); err != nil {
						errs <- err
						return
					}
				}
				tok, err := iss.Token(context.Background())
				if err != nil {
					errs <- err
					return
				}
				c, err := ver.Verify(context.Background(), tok)
				if err != nil {
					errs <- err
					return
				}
				if c.Organization != "fabrikam.com" {
					errs <- errors.New("wrong organization " + c.Organization)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
