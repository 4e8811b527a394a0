// Package onprem is the on-premises side of server-to-server OAuth: it keeps
// the signing certificates in a folder, named by thumbprint, and turns the
// auth and proxy settings into S2S tokens for the relay.
package onprem

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// DefaultCertDir is where certificates are kept unless told otherwise.
const DefaultCertDir = "./data/auth"

// ErrNoCertificate is returned when no current certificate is configured.
var ErrNoCertificate = errors.New("no S2S certificate configured: run pushctl auth new-certificate --domain <organization>")

// Paths returns the certificate and key file of a thumbprint in dir.
func Paths(dir, thumbprint string) (certPath, keyPath string) {
	return filepath.Join(dir, thumbprint+".pem"), filepath.Join(dir, thumbprint+".key")
}

// Save writes cert and its key into dir under its thumbprint, refusing to
// replace an existing key.
func Save(dir string, cert *tokens.Certificate) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating certificate folder: %w", err)
	}
	certPath, keyPath := Paths(dir, cert.Thumbprint())
	if _, err := os.Stat(keyPath); err == nil {
		return fmt.Errorf("a key for %s already exists in %s", cert.Thumbprint(), dir)
	}
	return cert.WritePEM(certPath, keyPath)
}

// Load reads the certificate with thumbprint from dir, with its key.
func Load(dir, thumbprint string) (*tokens.Certificate, error) {
	if thumbprint == "" {
		return nil, ErrNoCertificate
	}
	certPath, keyPath := Paths(dir, thumbprint)
	cert, err := tokens.LoadPEM(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s from %s: %w", thumbprint, dir, err)
	}
	return cert, nil
}

// IssuerOptions derives the token claims from the settings: the realm is
// the configured one or the organization, and the audience host is the
// host of the proxy URI.
func IssuerOptions(auth settings.Auth, proxy settings.Proxy) (tokens.IssuerOptions, error) {
	realm := auth.Realm
	if realm == "" {
		realm = proxy.Organization
	}
	if realm == "" {
		return tokens.IssuerOptions{}, errors.New("no realm: enable the proxy for an organization (pushctl proxy enable --organization ...)")
	}
	u, err := url.Parse(proxy.URI)
	if err != nil || u.Hostname() == "" {
		return tokens.IssuerOptions{}, fmt.Errorf("proxy uri %q has no host", proxy.URI)
	}
	return tokens.IssuerOptions{IssuerID: auth.ServiceName, Realm: realm, PrincipalID: auth.RelayPrincipal, Host: u.Hostname()}, nil
}

// errSettingsUnreadable marks a reload that could not read the settings,
// as opposed to settings that do not make an issuer.
var errSettingsUnreadable = errors.New("cannot read the auth and proxy settings")

// Source gives tokens for the current settings. It rereads the settings at
// most every refresh interval and builds a new issuer when the certificate,
// realm, principal or relay host changed. It is safe for concurrent use.
type Source struct {
	store   *settings.Store
	certDir string
	refresh time.Duration
	now     func() time.Time

	mu      sync.Mutex
	checked time.Time
	opts    tokens.IssuerOptions
	thumb   string
	dir     string
	issuer  *tokens.Issuer
}

// NewSource returns a Source reading settings from store and certificates
// from certDir, or, when certDir is empty, from the folder the auth
// configuration names at each reload (see CertDir), so that a certificate
// created after the start is picked up.
func NewSource(store *settings.Store, certDir string) *Source {
	return &Source{store: store, certDir: certDir, refresh: 5 * time.Second, now: time.Now}
}

// Token returns a token for the relay of the current proxy settings.
func (s *Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.issuer == nil || s.now().Sub(s.checked) >= s.refresh {
		if err := s.reload(ctx); err != nil {
			if s.issuer == nil || !errors.Is(err, errSettingsUnreadable) {
				return "", err
			}
			// The settings cannot be read (NATS is restarting, say): the
			// last ones are seconds old, and a push signed with them beats
			// no push. Try again after the next refresh interval.
			s.checked = s.now()
		}
	}
	return s.issuer.Token(ctx)
}

// Certificate returns the current signing certificate.
func (s *Source) Certificate(ctx context.Context) (*tokens.Certificate, error) {
	auth, err := s.store.Auth(ctx)
	if err != nil {
		return nil, err
	}
	return Load(CertDir(auth, s.certDir), auth.CurrentCertificateThumbprint)
}

// CertDir is the certificate folder to use: dir when given, else the one
// the auth configuration names, else DefaultCertDir.
func CertDir(auth settings.Auth, dir string) string {
	switch {
	case dir != "":
		return dir
	case auth.CertificateDir != "":
		return auth.CertificateDir
	default:
		return DefaultCertDir
	}
}

func (s *Source) reload(ctx context.Context) error {
	auth, err := s.store.Auth(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errSettingsUnreadable, err)
	}
	proxy, err := s.store.Proxy(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errSettingsUnreadable, err)
	}
	opts, err := IssuerOptions(auth, proxy)
	if err != nil {
		return err
	}
	s.checked = s.now()
	dir := CertDir(auth, s.certDir)
	if s.issuer != nil && sameClaims(opts, s.opts) && auth.CurrentCertificateThumbprint == s.thumb && dir == s.dir {
		return nil
	}
	cert, err := Load(dir, auth.CurrentCertificateThumbprint)
	if err != nil {
		return err
	}
	issuer, err := tokens.NewIssuer(cert, opts)
	if err != nil {
		return err
	}
	s.issuer, s.opts, s.thumb, s.dir = issuer, opts, auth.CurrentCertificateThumbprint, dir
	return nil
}

func sameClaims(a, b tokens.IssuerOptions) bool {
	return a.IssuerID == b.IssuerID && a.Realm == b.Realm && a.PrincipalID == b.PrincipalID && a.Host == b.Host && a.Lifetime == b.Lifetime
}
