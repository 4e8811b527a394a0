package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Partner is a registered partner organisation: the tenant its verified
// tokens speak for, the realm of their issuer, and the certificates they
// may be signed with. It is stored as JSON under the lower-case
// organisation in the relay_partners bucket.
type Partner struct {
	// Organization is the organisation's lower-case domain, e.g.
	// fabrikam.com.
	Organization string `json:"organization"`
	// Realm is the realm of the organisation's tokens (iss
	// <issuer id>@<realm>); by default the organisation, as on the
	// on-premises side.
	Realm string `json:"realm"`
	// IssuerID, when set, must be the issuer id of the organisation's tokens.
	IssuerID string `json:"issuerId,omitempty"`
	// Certificates are the registered signing certificates, typically the
	// current one and, during a rotation, the next.
	Certificates []Certificate `json:"certificates"`
	// Quota, when set, is the organization's own notification quota,
	// instead of the relay's --tenant-rate and --tenant-burst (see
	// Store.SetQuota).
	Quota *Quota `json:"quota,omitempty"`
	// WhenCreated and WhenChanged are when the partner was registered and
	// last changed.
	WhenCreated time.Time `json:"whenCreated"`
	WhenChanged time.Time `json:"whenChanged"`
}

// Certificate is a signing certificate registered for a partner.
type Certificate struct {
	// Thumbprint is the SHA-1 of the DER certificate as 40 upper-case hex
	// characters.
	Thumbprint string `json:"thumbprint"`
	// DER is the public certificate, DER encoded (base64 in JSON).
	DER []byte `json:"certificate"`
	// StartDate and EndDate bound when tokens signed with the certificate
	// are accepted; zero means the certificate's own validity.
	StartDate time.Time `json:"startDate,omitzero"`
	EndDate   time.Time `json:"endDate,omitzero"`
	// Subject, NotBefore and NotAfter describe the certificate, for lists.
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// WhenAdded is when the certificate was registered.
	WhenAdded time.Time `json:"whenAdded"`
}

// Start is when the certificate starts being accepted: StartDate or the
// certificate's own NotBefore, whichever comes last.
func (c Certificate) Start() time.Time {
	if c.StartDate.After(c.NotBefore) {
		return c.StartDate
	}
	return c.NotBefore
}

// End is when the certificate stops being accepted: EndDate, or the
// certificate's own NotAfter, whichever comes first.
func (c Certificate) End() time.Time {
	if c.EndDate.IsZero() || c.NotAfter.Before(c.EndDate) {
		return c.NotAfter
	}
	return c.EndDate
}

// TokensPartner converts p into the form the token verifier uses.
func (p Partner) TokensPartner() (tokens.Partner, error) {
	tp := tokens.Partner{Organization: p.Organization, Realm: p.Realm, IssuerID: p.IssuerID}
	for _, c := range p.Certificates {
		cert, err := tokens.ParsePublic(c.DER)
		if err != nil {
			return tokens.Partner{}, fmt.Errorf("partner %s: certificate %s: %w", p.Organization, c.Thumbprint, err)
		}
		tp.Certificates = append(tp.Certificates, tokens.RegisteredCert{Cert: cert.X509, NotBefore: c.StartDate, NotAfter: c.EndDate})
	}
	return tp, nil
}

// CertificateRegistration asks to register a signing certificate for an
// organisation, creating the partner if it is new.
type CertificateRegistration struct {
	// Organization is the organisation's domain. Required.
	Organization string
	// Realm is the realm of the organisation's tokens. Empty keeps the
	// registered realm, or for a new partner uses the organisation.
	Realm string
	// IssuerID, when set, pins the issuer id of the organisation's tokens.
	// Empty keeps what is registered.
	IssuerID string
	// Certificate is the public certificate, DER (a .cer file) or PEM.
	Certificate []byte
	// StartDate and EndDate bound when the certificate is accepted; zero
	// means the certificate's own validity.
	StartDate, EndDate time.Time
}

// NormalizeOrganization returns the organisation's domain in lower case,
// or an error wrapping ErrInvalid if it is not a domain name.
func NormalizeOrganization(org string) (string, error) {
	org = strings.ToLower(strings.TrimSpace(org))
	if err := events.ValidateTenant(org); err != nil {
		return "", invalid("organization: %v", errors.Unwrap(err))
	}
	return org, nil
}

// validateName checks a realm or issuer id: the token formats join them
// with '@' and '/', so neither may contain those, spaces or control
// characters.
func validateName(what, v string) error {
	if len(v) > 253 {
		return invalid("%s is longer than 253 characters", what)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r == '@' || r == '/' || r <= ' ' || r == 0x7f }) {
		return invalid("%s %q must not contain '@', '/', spaces or control characters", what, v)
	}
	return nil
}

// AddCertificate registers a signing certificate for an organisation, the
// counterpart of New-MsolServicePrincipalCredential. A partner is created
// on its first certificate; registering a certificate again updates its
// dates. A certificate registered for another organisation is refused with
// an error matching tokens.ErrDuplicateCertificate. It returns the partner
// as registered now and the certificate's entry.
func (s *Store) AddCertificate(ctx context.Context, reg CertificateRegistration) (Partner, Certificate, error) {
	org, err := NormalizeOrganization(reg.Organization)
	if err != nil {
		return Partner{}, Certificate{}, err
	}
	for _, n := range [][2]string{{"realm", reg.Realm}, {"issuer id", reg.IssuerID}} {
		if err := validateName(n[0], n[1]); err != nil {
			return Partner{}, Certificate{}, err
		}
	}
	cert, err := tokens.ParsePublic(reg.Certificate)
	if err != nil {
		return Partner{}, Certificate{}, invalid("certificate: %v", err)
	}
	now := s.now().UTC()
	entry := Certificate{
		Thumbprint: cert.Thumbprint(),
		DER:        cert.X509.Raw,
		StartDate:  reg.StartDate.UTC(),
		EndDate:    reg.EndDate.UTC(),
		Subject:    cert.X509.Subject.String(),
		NotBefore:  cert.X509.NotBefore.UTC(),
		NotAfter:   cert.X509.NotAfter.UTC(),
		WhenAdded:  now,
	}
	switch {
	case !entry.End().After(entry.Start()):
		return Partner{}, Certificate{}, invalid("certificate %s would be accepted from %s until %s: the end is not after the start",
			entry.Thumbprint, formatDate(entry.Start()), formatDate(entry.End()))
	case !entry.End().After(now):
		return Partner{}, Certificate{}, invalid("certificate %s would be accepted only until %s, which has passed", entry.Thumbprint, formatDate(entry.End()))
	}
	if err := s.checkCertificateOwner(ctx, org, entry.Thumbprint); err != nil {
		return Partner{}, Certificate{}, err
	}

	var saved Partner
	err = update(ctx, s.partners, org, func(raw []byte, exists bool) ([]byte, error) {
		p := Partner{Organization: org, Realm: org, WhenCreated: now}
		if exists {
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, fmt.Errorf("decoding partner %s: %w", org, err)
			}
		}
		if reg.Realm != "" {
			p.Realm = reg.Realm
		}
		if reg.IssuerID != "" {
			p.IssuerID = reg.IssuerID
		}
		if i := slices.IndexFunc(p.Certificates, func(c Certificate) bool { return c.Thumbprint == entry.Thumbprint }); i >= 0 {
			entry.WhenAdded = p.Certificates[i].WhenAdded
			p.Certificates[i] = entry
		} else {
			p.Certificates = append(p.Certificates, entry)
		}
		p.WhenChanged = now
		saved = p
		return json.Marshal(p)
	})
	if err != nil {
		return Partner{}, Certificate{}, fmt.Errorf("registering certificate for %s: %w", org, err)
	}
	return saved, entry, nil
}

// checkCertificateOwner refuses a thumbprint registered for another
// organisation: a token's certificate must name exactly one tenant.
func (s *Store) checkCertificateOwner(ctx context.Context, org, thumbprint string) error {
	partners, err := s.Partners(ctx)
	if err != nil {
		return err
	}
	for _, p := range partners {
		if p.Organization == org {
			continue
		}
		for _, c := range p.Certificates {
			if c.Thumbprint == thumbprint {
				return fmt.Errorf("registering certificate %s for %s: %w (%s)", thumbprint, org, tokens.ErrDuplicateCertificate, p.Organization)
			}
		}
	}
	return nil
}

// Partner returns the partner registered for organization, or an error
// matching ErrNotFound.
func (s *Store) Partner(ctx context.Context, organization string) (Partner, error) {
	org, err := NormalizeOrganization(organization)
	if err != nil {
		return Partner{}, err
	}
	var p Partner
	if _, err := get(ctx, s.partners, org, &p); err != nil {
		if errors.Is(err, ErrNotFound) {
			return Partner{}, fmt.Errorf("partner %s: %w", org, ErrNotFound)
		}
		return Partner{}, err
	}
	return p, nil
}

// Partners returns every registered partner, by organisation.
func (s *Store) Partners(ctx context.Context) ([]Partner, error) {
	partners, err := list[Partner](ctx, s.partners)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(partners, func(a, b Partner) int { return strings.Compare(a.Organization, b.Organization) })
	return partners, nil
}

// RemovePartner removes the certificate with the given thumbprint from the
// organisation's registration, or the whole partner when thumbprint is
// empty or it was the last certificate. It returns what is left registered
// (the zero Partner when nothing is) or an error matching ErrNotFound.
func (s *Store) RemovePartner(ctx context.Context, organization, thumbprint string) (Partner, error) {
	org, err := NormalizeOrganization(organization)
	if err != nil {
		return Partner{}, err
	}
	thumbprint = strings.ToUpper(strings.TrimSpace(thumbprint))
	var left Partner
	err = update(ctx, s.partners, org, func(raw []byte, exists bool) ([]byte, error) {
		left = Partner{}
		if !exists {
			return nil, fmt.Errorf("partner %s: %w", org, ErrNotFound)
		}
		if thumbprint == "" {
			return nil, nil
		}
		var p Partner
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("decoding partner %s: %w", org, err)
		}
		i := slices.IndexFunc(p.Certificates, func(c Certificate) bool { return c.Thumbprint == thumbprint })
		if i < 0 {
			return nil, fmt.Errorf("certificate %s of partner %s: %w", thumbprint, org, ErrNotFound)
		}
		p.Certificates = slices.Delete(p.Certificates, i, i+1)
		if len(p.Certificates) == 0 {
			return nil, nil
		}
		p.WhenChanged = s.now().UTC()
		left = p
		return json.Marshal(p)
	})
	if err != nil {
		return Partner{}, fmt.Errorf("removing partner %s: %w", org, err)
	}
	return left, nil
}

// formatDate prints t for messages and lists.
func formatDate(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
