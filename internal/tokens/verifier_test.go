package tokens

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestRoundTrip(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	reg := newTestRegistry(t, fabrikamPartner(cert))
	now := func() time.Time { return testNow }
	tok, err := newTestIssuer(t, cert, now).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, err := newTestVerifier(t, reg, now).Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{
		Organization:         "fabrikam.com",
		Realm:                fabrikamRealm,
		IssuerID:             fabrikamIssuer,
		Issuer:               fabrikamIssuer + "@" + fabrikamRealm,
		Audience:             relayPrincipal + "/" + relayHost + "@" + fabrikamRealm,
		Thumbprint:           s2sThumbprint,
		TrustedForDelegation: true,
		NotBefore:            testNow,
		ExpiresAt:            testNow.Add(time.Hour),
	}
	if !got.NotBefore.Equal(want.NotBefore) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("times = %v..%v, want %v..%v", got.NotBefore, got.ExpiresAt, want.NotBefore, want.ExpiresAt)
	}
	got.NotBefore, got.ExpiresAt = want.NotBefore, want.ExpiresAt
	if *got != want {
		t.Errorf("claims = %+v\nwant     %+v", *got, want)
	}
}

func TestVerifyRejects(t *testing.T) {
	cert, contoso := loadTestCert(t, "s2s"), loadTestCert(t, "contoso")
	// fabrikam's next certificate is registered from tomorrow; contoso's
	// registration is over.
	next := loadTestCert(t, "s2s-next")
	stranger, err := selfSign(contoso.Key, CertificateOptions{Domain: "stranger.example", Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	partner := fabrikamPartner(cert)
	partner.Certificates = append(partner.Certificates, RegisteredCert{Cert: next.X509, NotBefore: testNow.Add(24 * time.Hour)})
	reg := newTestRegistry(t, partner,
		Partner{Organization: "contoso.com", Realm: contosoRealm, Certificates: []RegisteredCert{{Cert: contoso.X509, NotAfter: testNow.Add(-time.Hour)}}})
	ver := newTestVerifier(t, reg, func() time.Time { return testNow })

	rs := func(c *Certificate, mutate func(h map[string]any, cl jwt.MapClaims)) func(t *testing.T) string {
		return func(t *testing.T) string {
			h, cl := rs256Header(c), validClaims(testNow)
			if mutate != nil {
				mutate(h, cl)
			}
			return craft(t, jwt.SigningMethodRS256, c.Key, h, cl)
		}
	}
	claim := func(k string, v any) func(map[string]any, jwt.MapClaims) {
		return func(_ map[string]any, cl jwt.MapClaims) {
			if v == nil {
				delete(cl, k)
			} else {
				cl[k] = v
			}
		}
	}
	header := func(k string, v any) func(map[string]any, jwt.MapClaims) {
		return func(h map[string]any, _ jwt.MapClaims) {
			if v == nil {
				delete(h, k)
			} else {
				h[k] = v
			}
		}
	}
	withAlg := func(method jwt.SigningMethod, key any) func(t *testing.T) string {
		return func(t *testing.T) string {
			h := rs256Header(cert)
			h["alg"] = method.Alg()
			return craft(t, method, key, h, validClaims(testNow))
		}
	}
	const unsafeNone = jwt.UnsafeAllowNoneSignatureType
	var ecKey *ecdsa.PrivateKey
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.X509.Raw})
	ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	valid := rs(cert, nil)

	tests := []struct {
		name  string
		token func(t *testing.T) string
		is    error
	}{
		{"empty", func(*testing.T) string { return "" }, ErrMissingToken},
		{"too large", func(*testing.T) string { return strings.Repeat("a", DefaultMaxTokenSize+1) }, ErrTokenTooLarge},
		{"garbage", func(*testing.T) string { return "not a token" }, ErrMalformedToken},
		{"two segments", func(*testing.T) string { return "eyJhbGciOiJSUzI1NiJ9.e30" }, ErrMalformedToken},
		{"four segments", func(t *testing.T) string { return valid(t) + ".x" }, ErrMalformedToken},
		{"header not base64url", func(*testing.T) string { return "!!!.e30.c2ln" }, ErrMalformedToken},
		{"header not JSON", func(*testing.T) string { return b64("not json") + ".e30.c2ln" }, ErrMalformedToken},
		{"claims not JSON", func(*testing.T) string { return b64(`{"alg":"RS256"}`) + "." + b64("[") + ".c2ln" }, ErrMalformedToken},
		{"padded segments", func(t *testing.T) string { return strings.Replace(valid(t), ".", "==.", 1) }, ErrMalformedToken},
		{"alg none", withAlg(jwt.SigningMethodNone, unsafeNone), ErrUnsupportedAlgorithm},
		{"alg none, signature kept", func(t *testing.T) string {
			parts := strings.Split(valid(t), ".")
			return b64(`{"alg":"none","typ":"JWT","x5t":"`+cert.X5T()+`"}`) + "." + parts[1] + "." + parts[2]
		}, ErrUnsupportedAlgorithm},
		{"alg missing", rs(cert, header("alg", nil)), ErrUnsupportedAlgorithm},
		{"alg unknown", rs(cert, header("alg", "XY999")), ErrUnsupportedAlgorithm},
		{"HS256 keyed with the public certificate PEM", withAlg(jwt.SigningMethodHS256, pubPEM), ErrUnsupportedAlgorithm},
		{"HS256 keyed with the public certificate DER", withAlg(jwt.SigningMethodHS256, cert.X509.Raw), ErrUnsupportedAlgorithm},
		{"ES256", withAlg(jwt.SigningMethodES256, ecKey), ErrUnsupportedAlgorithm},
		{"PS256 with the registered key", withAlg(jwt.SigningMethodPS256, cert.Key), ErrUnsupportedAlgorithm},
		{"RS512 with the registered key", withAlg(jwt.SigningMethodRS512, cert.Key), ErrUnsupportedAlgorithm},
		{"typ not JWT", rs(cert, header("typ", "JWE")), ErrMalformedToken},
		{"crit header", rs(cert, header("crit", []string{"exp"})), ErrMalformedToken},
		{"x5t missing", rs(cert, header("x5t", nil)), ErrUnknownKey},
		{"x5t not a SHA-1", rs(cert, header("x5t", "abc")), ErrMalformedToken},
		{"x5t not a string", rs(cert, header("x5t", 42)), ErrMalformedToken},
		{"unknown x5t", rs(stranger, nil), ErrUnknownKey},
		{"x5t of a registered certificate, signed by another key", func(t *testing.T) string {
			return craft(t, jwt.SigningMethodRS256, contoso.Key, rs256Header(cert), validClaims(testNow))
		}, ErrBadSignature},
		{"tampered payload", func(t *testing.T) string {
			parts := strings.Split(valid(t), ".")
			cl := validClaims(testNow)
			cl["exp"] = testNow.Add(20 * time.Hour).Unix()
			payload, err := json.Marshal(cl)
			if err != nil {
				t.Fatal(err)
			}
			return parts[0] + "." + b64(string(payload)) + "." + parts[2]
		}, ErrBadSignature},
		{"tampered signature", func(t *testing.T) string {
			tok := []byte(valid(t))
			i := len(tok) - 10
			tok[i] = map[bool]byte{true: 'B', false: 'A'}[tok[i] == 'A']
			return string(tok)
		}, ErrBadSignature},
		{"signature empty", func(t *testing.T) string { return strings.Join(strings.Split(valid(t), ".")[:2], ".") + "." }, ErrBadSignature},
		{"certificate registration not started", rs(next, nil), ErrKeyNotActive},
		{"certificate registration ended", func(t *testing.T) string {
			cl := validClaims(testNow)
			iss := "contoso@" + contosoRealm
			cl["iss"], cl["nameid"], cl["aud"] = iss, iss, relayPrincipal+"/"+relayHost+"@"+contosoRealm
			return craft(t, jwt.SigningMethodRS256, contoso.Key, rs256Header(contoso), cl)
		}, ErrKeyNotActive},
		{"expired", rs(cert, func(_ map[string]any, cl jwt.MapClaims) {
			cl["nbf"], cl["exp"] = testNow.Add(-2*time.Hour).Unix(), testNow.Add(-DefaultClockSkew-time.Second).Unix()
		}), ErrExpired},
		{"not yet valid", rs(cert, func(_ map[string]any, cl jwt.MapClaims) {
			cl["nbf"], cl["exp"] = testNow.Add(DefaultClockSkew+time.Second).Unix(), testNow.Add(time.Hour).Unix()
		}), ErrNotYetValid},
		{"lifetime beyond 24 hours", rs(cert, claim("exp", testNow.Add(25*time.Hour).Unix())), ErrLifetimeTooLong},
		{"exp before nbf", rs(cert, claim("exp", testNow.Add(-time.Minute).Unix())), ErrMalformedToken},
		{"exp missing", rs(cert, claim("exp", nil)), ErrMalformedToken},
		{"nbf missing", rs(cert, claim("nbf", nil)), ErrMalformedToken},
		{"exp a string", rs(cert, claim("exp", "tomorrow")), ErrMalformedToken},
		{"wrong audience principal", rs(cert, claim("aud", "someone-else/"+relayHost+"@"+fabrikamRealm)), ErrWrongAudience},
		{"wrong audience host", rs(cert, claim("aud", relayPrincipal+"/evil.example@"+fabrikamRealm)), ErrWrongAudience},
		{"audience of another realm", rs(cert, claim("aud", relayPrincipal+"/"+relayHost+"@"+contosoRealm)), ErrWrongAudience},
		{"audience missing", rs(cert, claim("aud", nil)), ErrWrongAudience},
		{"issuer of another realm", rs(cert, func(_ map[string]any, cl jwt.MapClaims) {
			cl["iss"], cl["nameid"] = fabrikamIssuer+"@"+contosoRealm, fabrikamIssuer+"@"+contosoRealm
		}), ErrWrongIssuer},
		{"another issuer id", rs(cert, func(_ map[string]any, cl jwt.MapClaims) {
			cl["iss"], cl["nameid"] = "intruder@"+fabrikamRealm, "intruder@"+fabrikamRealm
		}), ErrWrongIssuer},
		{"issuer without realm", rs(cert, func(_ map[string]any, cl jwt.MapClaims) {
			cl["iss"], cl["nameid"] = fabrikamIssuer, fabrikamIssuer
		}), ErrWrongIssuer},
		{"nameid differs from iss", rs(cert, claim("nameid", "other@"+fabrikamRealm)), ErrWrongIssuer},
		{"nameid missing", rs(cert, claim("nameid", nil)), ErrWrongIssuer},
		{"not trusted for delegation", rs(cert, claim("trustedfordelegation", "false")), ErrNotTrustedForDelegation},
		{"trustedfordelegation missing", rs(cert, claim("trustedfordelegation", nil)), ErrNotTrustedForDelegation},
		{"trustedfordelegation a boolean", rs(cert, claim("trustedfordelegation", true)), ErrMalformedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ver.Verify(context.Background(), tt.token(t))
			if !errors.Is(err, tt.is) {
				t.Fatalf("Verify: %v (claims %+v), want %v", err, c, tt.is)
			}
			if !errors.Is(err, ErrRejected) {
				t.Errorf("error %v does not match ErrRejected", err)
			}
			if c != nil {
				t.Errorf("claims returned with an error: %+v", c)
			}
		})
	}
}

// b64 encodes s as a JWT segment.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestVerifyAccepts(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	reg := newTestRegistry(t, fabrikamPartner(cert))
	ver := newTestVerifier(t, reg, func() time.Time { return testNow })
	tests := []struct {
		name   string
		mutate func(h map[string]any, cl jwt.MapClaims)
	}{
		{"expired within the clock skew", func(_ map[string]any, cl jwt.MapClaims) {
			cl["nbf"], cl["exp"] = testNow.Add(-time.Hour).Unix(), testNow.Add(-DefaultClockSkew+time.Second).Unix()
		}},
		{"not yet valid within the clock skew", func(_ map[string]any, cl jwt.MapClaims) {
			cl["nbf"], cl["exp"] = testNow.Add(DefaultClockSkew-time.Second).Unix(), testNow.Add(time.Hour).Unix()
		}},
		{"lifetime exactly 24 hours", func(_ map[string]any, cl jwt.MapClaims) {
			cl["exp"] = testNow.Add(24 * time.Hour).Unix()
		}},
		{"no typ header", func(h map[string]any, _ jwt.MapClaims) { delete(h, "typ") }},
		{"padded x5t", func(h map[string]any, _ jwt.MapClaims) { h["x5t"] = cert.X5T() + "=" }},
		{"audience as a one-element array", func(_ map[string]any, cl jwt.MapClaims) {
			cl["aud"] = []string{relayPrincipal + "/" + relayHost + "@" + fabrikamRealm}
		}},
		{"audience and issuer in another letter case", func(_ map[string]any, cl jwt.MapClaims) {
			cl["aud"] = strings.ToUpper(cl["aud"].(string))
			cl["iss"] = strings.ToUpper(cl["iss"].(string))
			cl["nameid"] = strings.ToUpper(cl["nameid"].(string))
		}},
		{"extra claims", func(_ map[string]any, cl jwt.MapClaims) { cl["iat"] = testNow.Unix(); cl["actortoken"] = "x" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, cl := rs256Header(cert), validClaims(testNow)
			tt.mutate(h, cl)
			c, err := ver.Verify(context.Background(), craft(t, jwt.SigningMethodRS256, cert.Key, h, cl))
			if err != nil {
				t.Fatal(err)
			}
			if c.Organization != "fabrikam.com" {
				t.Errorf("organization %q", c.Organization)
			}
		})
	}
}

// TestRotation walks through a certificate rotation: the next certificate
// is registered ahead, the issuer switches, and the old certificate is
// accepted until its registration's end date.
func TestRotation(t *testing.T) {
	current, next := loadTestCert(t, "s2s"), loadTestCert(t, "s2s-next")
	clock := newFakeClock(testNow)
	reg := newTestRegistry(t, fabrikamPartner(current))
	ver := newTestVerifier(t, reg, clock.Now)
	oldIssuer, newIssuer := newTestIssuer(t, current, clock.Now), newTestIssuer(t, next, clock.Now)
	ctx := context.Background()

	verify := func(step string, iss *Issuer, want error) {
		t.Helper()
		_, err := ver.Verify(ctx, mustToken(t, iss))
		if (want == nil && err != nil) || (want != nil && !errors.Is(err, want)) {
			t.Errorf("%s: Verify: %v, want %v", step, err, want)
		}
	}

	verify("before registration, next certificate", newIssuer, ErrUnknownKey)

	// Register next from tomorrow; current ends in a week.
	oldEnd := testNow.Add(7 * 24 * time.Hour)
	p := fabrikamPartner()
	p.Certificates = []RegisteredCert{
		{Cert: current.X509, NotAfter: oldEnd},
		{Cert: next.X509, NotBefore: testNow.Add(24 * time.Hour)},
	}
	if err := reg.Put(p); err != nil {
		t.Fatal(err)
	}
	verify("registered, not started, next certificate", newIssuer, ErrKeyNotActive)
	verify("registered, current certificate", oldIssuer, nil)

	clock.Set(testNow.Add(25 * time.Hour))
	verify("next started, next certificate", newIssuer, nil)
	verify("next started, current certificate", oldIssuer, nil)

	clock.Set(oldEnd)
	verify("on current's end date, current certificate", oldIssuer, nil)

	clock.Set(oldEnd.Add(time.Second))
	verify("after current's end date, current certificate", oldIssuer, ErrKeyNotActive)
	verify("after current's end date, next certificate", newIssuer, nil)

	// Removing the old registration leaves it unknown.
	p.Certificates = p.Certificates[1:]
	if err := reg.Put(p); err != nil {
		t.Fatal(err)
	}
	verify("old registration removed, current certificate", oldIssuer, ErrUnknownKey)
}

func TestRegisteredCertActiveAt(t *testing.T) {
	x := loadTestCert(t, "s2s").X509
	day := 24 * time.Hour
	tests := []struct {
		name string
		rc   RegisteredCert
		at   time.Time
		want bool
	}{
		{"no dates, inside certificate validity", RegisteredCert{Cert: x}, testNow, true},
		{"no dates, before certificate validity", RegisteredCert{Cert: x}, x.NotBefore.Add(-time.Second), false},
		{"no dates, after certificate validity", RegisteredCert{Cert: x}, x.NotAfter.Add(time.Second), false},
		{"before start", RegisteredCert{Cert: x, NotBefore: testNow.Add(day)}, testNow, false},
		{"at start", RegisteredCert{Cert: x, NotBefore: testNow}, testNow, true},
		{"at end", RegisteredCert{Cert: x, NotAfter: testNow}, testNow, true},
		{"after end", RegisteredCert{Cert: x, NotAfter: testNow.Add(-time.Second)}, testNow, false},
		{"registration longer than the certificate", RegisteredCert{Cert: x, NotAfter: x.NotAfter.Add(day)}, x.NotAfter.Add(time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rc.ActiveAt(tt.at); got != tt.want {
				t.Errorf("ActiveAt = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestVerifierRealm covers a verifier pinned to one realm.
func TestVerifierRealm(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	reg := newTestRegistry(t, fabrikamPartner(cert))
	now := func() time.Time { return testNow }
	tok := mustToken(t, newTestIssuer(t, cert, now))
	for _, tt := range []struct {
		realm string
		want  error
	}{{fabrikamRealm, nil}, {contosoRealm, ErrWrongAudience}} {
		v, err := NewVerifier(VerifierOptions{PrincipalID: relayPrincipal, Host: relayHost, Realm: tt.realm, Partners: reg, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, tt.want) {
			t.Errorf("realm %s: Verify: %v, want %v", tt.realm, err, tt.want)
		}
	}
}

// failingSource is a PartnerSource whose store is down.
type failingSource struct{}

var errStoreDown = errors.New("store down")

func (failingSource) PartnerByThumbprint(context.Context, string) (Partner, error) {
	return Partner{}, errStoreDown
}

func TestVerifySourceFailureIsNotARejection(t *testing.T) {
	cert := loadTestCert(t, "s2s")
	now := func() time.Time { return testNow }
	_, err := newTestVerifier(t, failingSource{}, now).Verify(context.Background(), mustToken(t, newTestIssuer(t, cert, now)))
	if !errors.Is(err, errStoreDown) || errors.Is(err, ErrRejected) {
		t.Fatalf("Verify: %v, want the store's error and no rejection", err)
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	reg := NewRegistry()
	tests := []struct {
		name string
		opts VerifierOptions
	}{
		{"no partners", VerifierOptions{PrincipalID: relayPrincipal, Host: relayHost}},
		{"no principal", VerifierOptions{Host: relayHost, Partners: reg}},
		{"no host", VerifierOptions{PrincipalID: relayPrincipal, Partners: reg}},
		{"@ in realm", VerifierOptions{PrincipalID: relayPrincipal, Host: relayHost, Realm: "a@b", Partners: reg}},
		{"negative skew", VerifierOptions{PrincipalID: relayPrincipal, Host: relayHost, Partners: reg, ClockSkew: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewVerifier(tt.opts); err == nil {
				t.Fatal("NewVerifier succeeded")
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	cert, next, contoso := loadTestCert(t, "s2s"), loadTestCert(t, "s2s-next"), loadTestCert(t, "contoso")
	reg := newTestRegistry(t, fabrikamPartner(cert, next))
	ctx := context.Background()

	// Lookups by thumbprint, in any case, return copies.
	p, err := reg.PartnerByThumbprint(ctx, strings.ToLower(next.Thumbprint()))
	if err != nil || p.Organization != "fabrikam.com" || len(p.Certificates) != 2 {
		t.Fatalf("PartnerByThumbprint(next) = %+v, %v", p, err)
	}
	p.Certificates[0] = RegisteredCert{Cert: contoso.X509}
	if q, _ := reg.Partner("FABRIKAM.COM"); q.Certificates[0].Cert != cert.X509 {
		t.Error("changing a returned partner changed the registry")
	}

	tests := []struct {
		name string
		p    Partner
		is   error
	}{
		{"certificate of another organisation", Partner{Organization: "contoso.com", Realm: contosoRealm, Certificates: []RegisteredCert{{Cert: cert.X509}}}, ErrDuplicateCertificate},
		{"no realm", Partner{Organization: "contoso.com"}, errAny},
		{"nil certificate", Partner{Organization: "contoso.com", Realm: contosoRealm, Certificates: []RegisteredCert{{}}}, errAny},
		{"window ends before it starts", Partner{Organization: "contoso.com", Realm: contosoRealm, Certificates: []RegisteredCert{{Cert: contoso.X509, NotBefore: testNow, NotAfter: testNow.Add(-time.Hour)}}}, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := reg.Put(tt.p)
			if err == nil || (tt.is != errAny && !errors.Is(err, tt.is)) {
				t.Fatalf("Put: %v, want %v", err, tt.is)
			}
		})
	}

	// Replacing a partner drops the certificates it no longer lists.
	if err := reg.Put(fabrikamPartner(next)); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.PartnerByThumbprint(ctx, cert.Thumbprint()); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("replaced certificate still found: %v", err)
	}
	// ... so another organisation may now register it.
	if err := reg.Put(Partner{Organization: "contoso.com", Realm: contosoRealm, Certificates: []RegisteredCert{{Cert: cert.X509}}}); err != nil {
		t.Errorf("Put after release: %v", err)
	}
	if !reg.Remove("Contoso.com") || reg.Remove("contoso.com") {
		t.Error("Remove did not report the registration correctly")
	}
	if _, err := reg.PartnerByThumbprint(ctx, cert.Thumbprint()); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("removed partner's certificate still found: %v", err)
	}
}

func TestChallenge(t *testing.T) {
	trusted := fabrikamIssuer + "@" + fabrikamRealm
	base := `Bearer client_id="` + relayPrincipal + `", trusted_issuers="` + trusted + `"`
	tests := []struct {
		name      string
		principal string
		err       error
		want      string
	}{
		{"no token", relayPrincipal, ErrMissingToken, base},
		{"no error", relayPrincipal, nil, base},
		{"bad token", relayPrincipal, ErrExpired, base + `, error="invalid_token"`},
		{"wrapped bad token", relayPrincipal, errors.Join(errors.New("x"), ErrBadSignature), base + `, error="invalid_token"`},
		{"quotes, backslashes and line breaks", "a\"b\\c\r\nd", ErrMissingToken, `Bearer client_id="a\"b\\cd", trusted_issuers="` + trusted + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Challenge(tt.principal, trusted, tt.err); got != tt.want {
				t.Errorf("Challenge = %s\nwant        %s", got, tt.want)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header, want string
		is           error
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", nil},
		{"bearer  abc.def.ghi ", "abc.def.ghi", nil},
		{"", "", ErrMissingToken},
		{"Basic dXNlcjpwYXNz", "", ErrMissingToken},
		{"Bearer", "", ErrMalformedToken},
		{"Bearer ", "", ErrMalformedToken},
	}
	for _, tt := range tests {
		got, err := BearerToken(tt.header)
		if got != tt.want || !errors.Is(err, tt.is) || (tt.is == nil && err != nil) {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tt.header, got, err, tt.want, tt.is)
		}
	}
}
