package tokens

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Verifier defaults.
const (
	// DefaultClockSkew is the clock difference tolerated on nbf and exp.
	DefaultClockSkew = 5 * time.Minute
	// DefaultMaxTokenSize is the longest token, in bytes, a Verifier reads.
	DefaultMaxTokenSize = 8 << 10
)

// Partner is an organisation whose tokens the relay accepts.
type Partner struct {
	// Organization is the organisation's domain, e.g. fabrikam.com: the
	// tenant a verified token speaks for.
	Organization string
	// Realm is the organisation's realm (tenant id): the realm of the
	// token's iss.
	Realm string
	// IssuerID, when set, must be the id part of the token's iss.
	IssuerID string
	// Certificates are the registered signing certificates, typically the
	// current one and, during a rotation, the next.
	Certificates []RegisteredCert
}

// RegisteredCert is a signing certificate registered for a partner, with
// the dates of its registration (Exchange's asymmetric "Verify" credential
// with start and end dates).
type RegisteredCert struct {
	// Cert is the public certificate.
	Cert *x509.Certificate
	// NotBefore is when the registration starts; zero means from the
	// certificate's own NotBefore.
	NotBefore time.Time
	// NotAfter is when the registration ends; zero means at the
	// certificate's own NotAfter.
	NotAfter time.Time
}

// ActiveAt reports whether tokens signed with the certificate are accepted
// at t: t is inside the registration window and inside the certificate's
// own validity.
func (r RegisteredCert) ActiveAt(t time.Time) bool {
	if t.Before(r.Cert.NotBefore) || t.After(r.Cert.NotAfter) {
		return false
	}
	if !r.NotBefore.IsZero() && t.Before(r.NotBefore) {
		return false
	}
	return r.NotAfter.IsZero() || !t.After(r.NotAfter)
}

// PartnerSource finds the partner that registered a signing certificate.
// The relay may back it with a store that changes at runtime; it must be
// safe for concurrent use. [Registry] is an in-memory implementation.
type PartnerSource interface {
	// PartnerByThumbprint returns the partner with a certificate whose
	// thumbprint (SHA-1 of the DER certificate, 40 upper-case hex
	// characters) is given. It returns an error matching ErrUnknownKey when
	// there is none; any other error means the source failed.
	PartnerByThumbprint(ctx context.Context, thumbprint string) (Partner, error)
}

// VerifierOptions configures NewVerifier. PrincipalID, Host and Partners
// are required.
type VerifierOptions struct {
	// PrincipalID is the relay's principal id, the first part of aud.
	PrincipalID string
	// Host is the relay's host name, the part of aud after the '/'.
	Host string
	// Realm, when set, is the realm every token's aud must name. When
	// empty, aud must name the realm of the partner that signed the token,
	// as in the multi-tenant format where each organisation's tokens carry
	// its own realm. Issuers use one realm for aud and iss, so with Realm
	// set every partner's realm must be Realm.
	Realm string
	// Partners finds the registered certificates.
	Partners PartnerSource
	// ClockSkew is the tolerance on nbf and exp; DefaultClockSkew when zero.
	ClockSkew time.Duration
	// MaxLifetime is the longest exp - nbf accepted; MaxLifetime when zero.
	MaxLifetime time.Duration
	// MaxTokenSize is the longest token in bytes; DefaultMaxTokenSize when
	// zero.
	MaxTokenSize int
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// Verifier checks S2S tokens presented to the relay. It is safe for
// concurrent use.
type Verifier struct {
	principal   string
	host        string
	realm       string
	partners    PartnerSource
	skew        time.Duration
	maxLifetime time.Duration
	maxSize     int
	now         func() time.Time
	parser      *jwt.Parser
}

// NewVerifier returns a Verifier for the relay described by opts.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	if opts.Partners == nil {
		return nil, errors.New("creating token verifier: a partner source is required")
	}
	names := [][2]string{{"relay principal id", opts.PrincipalID}, {"relay host", opts.Host}}
	if opts.Realm != "" {
		names = append(names, [2]string{"realm", opts.Realm})
	}
	if err := checkNames(names); err != nil {
		return nil, fmt.Errorf("creating token verifier: %w", err)
	}
	if opts.ClockSkew == 0 {
		opts.ClockSkew = DefaultClockSkew
	}
	if opts.MaxLifetime == 0 {
		opts.MaxLifetime = MaxLifetime
	}
	if opts.MaxTokenSize == 0 {
		opts.MaxTokenSize = DefaultMaxTokenSize
	}
	if opts.ClockSkew < 0 || opts.MaxLifetime < 0 || opts.MaxTokenSize < 0 {
		return nil, errors.New("creating token verifier: clock skew, maximum lifetime and maximum token size must not be negative")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Verifier{
		principal:   opts.PrincipalID,
		host:        opts.Host,
		realm:       opts.Realm,
		partners:    opts.Partners,
		skew:        opts.ClockSkew,
		maxLifetime: opts.MaxLifetime,
		maxSize:     opts.MaxTokenSize,
		now:         opts.Now,
		// The algorithm is checked in the key function, before any key is
		// handed out, so that it is reported as ErrUnsupportedAlgorithm.
		// Claims are checked by checkClaims, against the same clock.
		parser: jwt.NewParser(jwt.WithoutClaimsValidation(), jwt.WithStrictDecoding()),
	}, nil
}

// Claims is what a verified token establishes.
type Claims struct {
	// Organization is the verified tenant: the domain of the partner that
	// registered the signing certificate.
	Organization string
	// Realm is the partner's realm.
	Realm string
	// IssuerID is the id part of iss.
	IssuerID string
	// Issuer is iss (and nameid), <IssuerID>@<Realm>.
	Issuer string
	// Audience is the aud value that named this relay.
	Audience string
	// Thumbprint identifies the certificate that signed the token.
	Thumbprint string
	// TrustedForDelegation is the trustedfordelegation claim.
	TrustedForDelegation bool
	// NotBefore and ExpiresAt are the token's nbf and exp.
	NotBefore, ExpiresAt time.Time
}

// wireClaims are the claims as they appear in a token.
type wireClaims struct {
	jwt.RegisteredClaims
	NameID               string `json:"nameid"`
	TrustedForDelegation string `json:"trustedfordelegation"`
}

// signer is the registration that signed a token.
type signer struct {
	partner    Partner
	thumbprint string
}

// Verify checks raw (the token without the "Bearer " prefix) and returns
// what it establishes. An error matching ErrRejected means the token is not
// acceptable; other errors come from the PartnerSource.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if raw == "" {
		return nil, ErrMissingToken
	}
	if len(raw) > v.maxSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTokenTooLarge, len(raw), v.maxSize)
	}
	now := v.now()
	var (
		wc     wireClaims
		by     signer
		keyErr error
	)
	_, err := v.parser.ParseWithClaims(raw, &wc, func(t *jwt.Token) (any, error) {
		key, s, err := v.signingKey(ctx, t, now)
		by, keyErr = s, err
		return key, err
	})
	switch {
	case keyErr != nil:
		return nil, keyErr
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, fmt.Errorf("%w: certificate %s of %s", ErrBadSignature, by.thumbprint, by.partner.Organization)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// The alg header is missing or names no known algorithm.
		return nil, ErrUnsupportedAlgorithm
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrMalformedToken, err)
	}
	return v.checkClaims(&wc, by, now)
}

// signingKey checks the token header and returns the public key of the
// registered certificate it names.
func (v *Verifier) signingKey(ctx context.Context, t *jwt.Token, now time.Time) (any, signer, error) {
	if t.Method != jwt.SigningMethodRS256 {
		return nil, signer{}, fmt.Errorf("%w: %q", ErrUnsupportedAlgorithm, t.Method.Alg())
	}
	if typ, ok := t.Header["typ"]; ok {
		if s, isString := typ.(string); !isString || !strings.EqualFold(s, "JWT") {
			return nil, signer{}, fmt.Errorf("%w: typ %v is not JWT", ErrMalformedToken, typ)
		}
	}
	if _, ok := t.Header["crit"]; ok {
		return nil, signer{}, fmt.Errorf("%w: critical header extensions are not supported", ErrMalformedToken)
	}
	x5tValue, ok := t.Header["x5t"]
	if !ok {
		return nil, signer{}, fmt.Errorf("%w: the header has no x5t naming the signing certificate", ErrUnknownKey)
	}
	x5t, _ := x5tValue.(string)
	sum, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(x5t, "="))
	if err != nil || len(sum) != 20 {
		return nil, signer{}, fmt.Errorf("%w: x5t is not a base64url SHA-1 thumbprint", ErrMalformedToken)
	}
	thumb := strings.ToUpper(hex.EncodeToString(sum))

	partner, err := v.partners.PartnerByThumbprint(ctx, thumb)
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return nil, signer{}, fmt.Errorf("%w: thumbprint %s", ErrUnknownKey, thumb)
		}
		return nil, signer{}, fmt.Errorf("looking up signing certificate %s: %w", thumb, err)
	}
	registered := false
	for _, rc := range partner.Certificates {
		if rc.Cert == nil || thumbprint(rc.Cert) != thumb {
			continue
		}
		registered = true
		if !rc.ActiveAt(now) {
			continue
		}
		pub, err := rsaPublicKey(rc.Cert)
		if err != nil {
			return nil, signer{}, fmt.Errorf("%w: registered certificate %s: %w", ErrUnknownKey, thumb, err)
		}
		return pub, signer{partner: partner, thumbprint: thumb}, nil
	}
	if registered {
		return nil, signer{}, fmt.Errorf("%w: certificate %s of %s", ErrKeyNotActive, thumb, partner.Organization)
	}
	return nil, signer{}, fmt.Errorf("%w: thumbprint %s", ErrUnknownKey, thumb)
}

// checkClaims checks the claims of a token whose signature verified.
func (v *Verifier) checkClaims(wc *wireClaims, by signer, now time.Time) (*Claims, error) {
	if wc.NotBefore == nil || wc.ExpiresAt == nil {
		return nil, fmt.Errorf("%w: nbf and exp are required", ErrMalformedToken)
	}
	nbf, exp := wc.NotBefore.Time, wc.ExpiresAt.Time
	if !exp.After(nbf) {
		return nil, fmt.Errorf("%w: exp is not after nbf", ErrMalformedToken)
	}
	if exp.Sub(nbf) > v.maxLifetime {
		return nil, fmt.Errorf("%w: %s, the limit is %s", ErrLifetimeTooLong, exp.Sub(nbf), v.maxLifetime)
	}
	if !now.Before(exp.Add(v.skew)) {
		return nil, fmt.Errorf("%w: at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	if now.Add(v.skew).Before(nbf) {
		return nil, fmt.Errorf("%w: from %s", ErrNotYetValid, nbf.UTC().Format(time.RFC3339))
	}

	p := by.partner
	realm := v.realm
	if realm == "" {
		realm = p.Realm
	}
	wantAud := v.principal + "/" + v.host + "@" + realm
	aud := ""
	for _, a := range wc.Audience {
		if strings.EqualFold(a, wantAud) {
			aud = a
		}
	}
	if aud == "" {
		return nil, fmt.Errorf("%w: %q, want %q", ErrWrongAudience, []string(wc.Audience), wantAud)
	}

	id, issRealm, ok := cutLast(wc.Issuer, "@")
	switch {
	case !ok || id == "":
		return nil, fmt.Errorf("%w: iss %q is not <issuer id>@<realm>", ErrWrongIssuer, wc.Issuer)
	case !strings.EqualFold(issRealm, p.Realm):
		return nil, fmt.Errorf("%w: realm %q, %s is registered with realm %q", ErrWrongIssuer, issRealm, p.Organization, p.Realm)
	case p.IssuerID != "" && !strings.EqualFold(id, p.IssuerID):
		return nil, fmt.Errorf("%w: issuer id %q, %s is registered with %q", ErrWrongIssuer, id, p.Organization, p.IssuerID)
	case !strings.EqualFold(wc.NameID, wc.Issuer):
		return nil, fmt.Errorf("%w: nameid %q differs from iss %q", ErrWrongIssuer, wc.NameID, wc.Issuer)
	}

	if wc.TrustedForDelegation != "true" {
		return nil, fmt.Errorf("%w: trustedfordelegation is %q, want \"true\"", ErrNotTrustedForDelegation, wc.TrustedForDelegation)
	}

	return &Claims{
		Organization:         p.Organization,
		Realm:                p.Realm,
		IssuerID:             id,
		Issuer:               wc.Issuer,
		Audience:             aud,
		Thumbprint:           by.thumbprint,
		TrustedForDelegation: true,
		NotBefore:            nbf.UTC(),
		ExpiresAt:            exp.UTC(),
	}, nil
}

// cutLast splits s around the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// BearerToken extracts the token from an Authorization header value. A
// missing header or another scheme gives ErrMissingToken, as RFC 6750
// treats both as no token presented.
func BearerToken(authorization string) (string, error) {
	scheme, token, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", ErrMissingToken
	}
	if token = strings.TrimSpace(token); token == "" {
		return "", fmt.Errorf("%w: empty bearer token", ErrMalformedToken)
	}
	return token, nil
}

// Challenge builds the WWW-Authenticate value for a 401:
//
//	Bearer client_id="<principal>", trusted_issuers="<issuer id>@<realm>"
//
// with error="invalid_token" added when a token was presented, that is
// when err is not nil and is not ErrMissingToken.
func Challenge(principal, trustedIssuer string, err error) string {
	var b strings.Builder
	b.WriteString("Bearer client_id=")
	writeQuoted(&b, principal)
	b.WriteString(", trusted_issuers=")
	writeQuoted(&b, trustedIssuer)
	if err != nil && !errors.Is(err, ErrMissingToken) {
		b.WriteString(`, error="invalid_token"`)
	}
	return b.String()
}

// writeQuoted writes s as an HTTP quoted-string, escaping '"' and '\' and
// dropping control characters so the header cannot be split.
func writeQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < ' ' || r == 0x7f:
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}
