package tokens

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token lifetime defaults and limits.
const (
	// DefaultLifetime is how long an issued token is valid when no
	// lifetime is given.
	DefaultLifetime = time.Hour
	// MinLifetime is the shortest token lifetime an Issuer accepts.
	MinLifetime = 10 * time.Minute
	// MaxLifetime is the longest token lifetime an Issuer accepts and the
	// default maximum a Verifier accepts (Exchange's actor tokens lived 24
	// hours).
	MaxLifetime = 24 * time.Hour
	// minRenewMargin is the least time before expiry at which a cached
	// token is replaced.
	minRenewMargin = 5 * time.Minute
)

// IssuerOptions configures NewIssuer. IssuerID, Realm, PrincipalID and Host
// are required.
type IssuerOptions struct {
	// IssuerID names this organisation's issuer, e.g. a GUID; the token's
	// iss and nameid are <IssuerID>@<Realm>.
	IssuerID string
	// Realm is the organisation's realm (tenant id) as registered at the
	// relay.
	Realm string
	// PrincipalID is the relay's principal id, the first part of aud.
	PrincipalID string
	// Host is the relay's host name; aud is <PrincipalID>/<Host>@<Realm>.
	Host string
	// Lifetime is each token's validity; DefaultLifetime when zero, and
	// between MinLifetime and MaxLifetime.
	Lifetime time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// Issuer signs S2S tokens with an organisation's certificate. It caches the
// current token and signs a new one when less than a quarter of the lifetime
// (and at least five minutes) is left. It is safe for concurrent use.
type Issuer struct {
	cert        *Certificate
	x5t         string
	iss         string
	aud         string
	lifetime    time.Duration
	renewMargin time.Duration
	now         func() time.Time

	mu      sync.Mutex
	token   string
	renewAt time.Time
}

// NewIssuer returns an Issuer that signs with cert, which must hold its
// private key.
func NewIssuer(cert *Certificate, opts IssuerOptions) (*Issuer, error) {
	if cert == nil || cert.X509 == nil {
		return nil, errors.New("creating token issuer: a certificate is required")
	}
	if cert.Key == nil {
		return nil, fmt.Errorf("creating token issuer: %w", ErrNoPrivateKey)
	}
	if _, err := newCertificate(cert.X509, cert.Key); err != nil {
		return nil, fmt.Errorf("creating token issuer: %w", err)
	}
	if err := checkNames([][2]string{
		{"issuer id", opts.IssuerID}, {"realm", opts.Realm}, {"relay principal id", opts.PrincipalID}, {"relay host", opts.Host},
	}); err != nil {
		return nil, fmt.Errorf("creating token issuer: %w", err)
	}
	if opts.Lifetime == 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.Lifetime < MinLifetime || opts.Lifetime > MaxLifetime {
		return nil, fmt.Errorf("creating token issuer: lifetime %s is outside %s..%s", opts.Lifetime, MinLifetime, MaxLifetime)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Issuer{
		cert:        cert,
		x5t:         cert.X5T(),
		iss:         opts.IssuerID + "@" + opts.Realm,
		aud:         opts.PrincipalID + "/" + opts.Host + "@" + opts.Realm,
		lifetime:    opts.Lifetime,
		renewMargin: max(opts.Lifetime/4, minRenewMargin),
		now:         opts.Now,
	}, nil
}

// checkNames reports the first empty value, or one containing a character
// that would make aud or iss ambiguous ('@', '/') or a space or control
// character. Each pair is a description and its value.
func checkNames(names [][2]string) error {
	for _, n := range names {
		what, v := n[0], n[1]
		if v == "" {
			return fmt.Errorf("%s is required", what)
		}
		if strings.ContainsFunc(v, func(r rune) bool { return r == '@' || r == '/' || r <= ' ' || r == 0x7f }) {
			return fmt.Errorf("%s %q must not contain '@', '/', spaces or control characters", what, v)
		}
	}
	return nil
}

// Token returns a signed token, from the cache while it has enough time
// left, otherwise a newly signed one.
func (i *Issuer) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("issuing S2S token: %w", err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.now()
	if i.token != "" && now.Before(i.renewAt) {
		return i.token, nil
	}
	if now.Before(i.cert.X509.NotBefore) || now.After(i.cert.X509.NotAfter) {
		return "", fmt.Errorf("issuing S2S token: certificate %s is valid from %s until %s: %w",
			i.cert.Thumbprint(), i.cert.X509.NotBefore.UTC().Format(time.RFC3339),
			i.cert.X509.NotAfter.UTC().Format(time.RFC3339), ErrCertificateExpired)
	}
	nbf := now.Unix()
	exp := now.Add(i.lifetime).Unix()
	token := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"aud":                  i.aud,
		"iss":                  i.iss,
		"nameid":               i.iss,
		"trustedfordelegation": "true",
		"nbf":                  nbf,
		"exp":                  exp,
	})
	token.Header["x5t"] = i.x5t
	signed, err := token.SignedString(i.cert.Key)
	if err != nil {
		return "", fmt.Errorf("signing S2S token: %w", err)
	}
	i.token = signed
	i.renewAt = time.Unix(exp, 0).Add(-i.renewMargin)
	return signed, nil
}
