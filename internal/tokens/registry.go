package tokens

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Registry is an in-memory PartnerSource: the partner organisations and
// their registered certificates. It is safe for concurrent use, so the relay
// can update it while verifying tokens.
type Registry struct {
	mu      sync.RWMutex
	byOrg   map[string]Partner // key: lower-case organization
	byThumb map[string]string  // thumbprint -> lower-case organization
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{byOrg: make(map[string]Partner), byThumb: make(map[string]string)}
}

// Put adds p or replaces the partner with the same Organization (compared
// case-insensitively). Every certificate must have an RSA key of at least
// MinKeyBits and must not be registered for another organisation.
func (r *Registry) Put(p Partner) error {
	names := [][2]string{{"organization", p.Organization}, {"realm", p.Realm}}
	if p.IssuerID != "" {
		names = append(names, [2]string{"issuer id", p.IssuerID})
	}
	if err := checkNames(names); err != nil {
		return fmt.Errorf("registering partner: %w", err)
	}
	org := strings.ToLower(p.Organization)
	thumbs := make([]string, 0, len(p.Certificates))
	for _, rc := range p.Certificates {
		if rc.Cert == nil {
			return fmt.Errorf("registering partner %s: a registered certificate is nil", p.Organization)
		}
		if _, err := rsaPublicKey(rc.Cert); err != nil {
			return fmt.Errorf("registering partner %s: %w", p.Organization, err)
		}
		if !rc.NotBefore.IsZero() && !rc.NotAfter.IsZero() && !rc.NotAfter.After(rc.NotBefore) {
			return fmt.Errorf("registering partner %s: certificate %s: registration ends before it starts", p.Organization, thumbprint(rc.Cert))
		}
		thumbs = append(thumbs, thumbprint(rc.Cert))
	}
	p.Certificates = slices.Clone(p.Certificates)

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range thumbs {
		if owner, ok := r.byThumb[t]; ok && owner != org {
			return fmt.Errorf("registering partner %s: certificate %s: %w (%s)", p.Organization, t, ErrDuplicateCertificate, owner)
		}
	}
	r.removeLocked(org)
	r.byOrg[org] = p
	for _, t := range thumbs {
		r.byThumb[t] = org
	}
	return nil
}

// Remove deletes the partner with the given organisation and reports
// whether it was registered.
func (r *Registry) Remove(organization string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removeLocked(strings.ToLower(organization))
}

// removeLocked deletes the partner registered under org; r.mu must be held.
func (r *Registry) removeLocked(org string) bool {
	old, ok := r.byOrg[org]
	if !ok {
		return false
	}
	for _, rc := range old.Certificates {
		delete(r.byThumb, thumbprint(rc.Cert))
	}
	delete(r.byOrg, org)
	return true
}

// Partner returns a copy of the partner registered for organization.
func (r *Registry) Partner(organization string) (Partner, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.byOrg[strings.ToLower(organization)]
	p.Certificates = slices.Clone(p.Certificates)
	return p, ok
}

// PartnerByThumbprint implements PartnerSource.
func (r *Registry) PartnerByThumbprint(_ context.Context, thumbprint string) (Partner, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	org, ok := r.byThumb[strings.ToUpper(thumbprint)]
	if !ok {
		return Partner{}, ErrUnknownKey
	}
	p := r.byOrg[org]
	p.Certificates = slices.Clone(p.Certificates)
	return p, nil
}
