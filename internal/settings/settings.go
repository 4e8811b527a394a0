// Package settings keeps the proxy configuration and the auth configuration
// in the NATS KV bucket "config", where every dispatcher, the monitor and
// pushctl read the same values.
package settings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
)

// Keys of the config bucket.
const (
	KeyProxy = "proxy"
	KeyAuth  = "auth"
)

// Defaults of the proxy app, as Exchange named its built-in "OnPrem-Proxy".
const (
	ProxyDisplayName = "On Premises Proxy app"
	ProxyName        = "OnPrem-Proxy"
	// DefaultURI is the relay the proxy pushes to when no --uri was given:
	// the relay that pushctl standalone runs.
	DefaultURI = "http://127.0.0.1:8027/PushNotifications"
)

// Proxy is the push notification proxy configuration, the equivalent of
// what Enable-PushNotificationProxy edited.
type Proxy struct {
	DisplayName  string    `json:"DisplayName"`
	Enabled      bool      `json:"Enabled"`
	Organization string    `json:"Organization"`
	URI          string    `json:"Uri"`
	Identity     string    `json:"Identity"`
	Name         string    `json:"Name"`
	WhenCreated  time.Time `json:"WhenCreated,omitzero"`
	WhenChanged  time.Time `json:"WhenChanged,omitzero"`
}

// DefaultProxy is the configuration before anyone enabled the proxy.
func DefaultProxy() Proxy {
	return Proxy{DisplayName: ProxyDisplayName, Name: ProxyName, Identity: ProxyName, URI: DefaultURI}
}

// Auth is the S2S OAuth configuration of the on-premises side, the
// equivalent of Exchange's Get-AuthConfig.
type Auth struct {
	// CurrentCertificateThumbprint signs tokens now.
	CurrentCertificateThumbprint string `json:"CurrentCertificateThumbprint"`
	// NextCertificateThumbprint is published ahead of a rotation.
	NextCertificateThumbprint string `json:"NextCertificateThumbprint,omitempty"`
	// Realm is the realm of the issuer and audience; by default the organization.
	Realm string `json:"Realm,omitempty"`
	// ServiceName is the issuer id of the on-premises side.
	ServiceName string `json:"ServiceName"`
	// RelayPrincipal is the relay's principal id, the first part of the audience.
	RelayPrincipal string `json:"RelayPrincipal"`
	// AuthMetadataURL is where the relay's auth metadata document was read.
	AuthMetadataURL string `json:"AuthMetadataUrl,omitempty"`
	// CertificateDir holds the certificate and key files, named by thumbprint.
	CertificateDir string    `json:"CertificateDir,omitempty"`
	WhenChanged    time.Time `json:"WhenChanged,omitzero"`
}

// Well-known principal ids, used unless the relay's metadata says otherwise.
const (
	DefaultServiceName    = "00000002-7070-7878-0000-000000000000"
	DefaultRelayPrincipal = "00000003-7070-7878-0000-000000000000"
)

// DefaultAuth is the auth configuration before any setup.
func DefaultAuth() Auth {
	return Auth{ServiceName: DefaultServiceName, RelayPrincipal: DefaultRelayPrincipal}
}

// ErrInvalid is wrapped by every error about a bad setting value.
var ErrInvalid = errors.New("invalid setting")

// Store reads and writes the settings.
type Store struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// Open opens the config bucket, which provisioning creates.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, broker.BucketConfig)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", broker.BucketConfig, err)
	}
	return &Store{kv: kv, now: time.Now}, nil
}

// WithClock returns a copy of the store that takes time from now.
func (s *Store) WithClock(now func() time.Time) *Store {
	return &Store{kv: s.kv, now: now}
}

// Proxy returns the proxy configuration, or DefaultProxy if none was saved.
func (s *Store) Proxy(ctx context.Context) (Proxy, error) {
	p := DefaultProxy()
	_, err := s.get(ctx, KeyProxy, &p)
	return p, err
}

// Auth returns the auth configuration, or DefaultAuth if none was saved.
func (s *Store) Auth(ctx context.Context) (Auth, error) {
	a := DefaultAuth()
	_, err := s.get(ctx, KeyAuth, &a)
	return a, err
}

// EnableProxy enables the proxy for organization, pushing to uri (or the
// saved or default URI when uri is empty). It reports whether anything
// changed: enabling twice with the same values changes nothing.
func (s *Store) EnableProxy(ctx context.Context, organization, uri string) (Proxy, bool, error) {
	organization = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(organization)), ".")
	if err := events.ValidateTenant(organization); err != nil {
		return Proxy{}, false, fmt.Errorf("%w: organization %q is not a domain name", ErrInvalid, organization)
	}
	if uri != "" {
		if err := ValidateURI(uri); err != nil {
			return Proxy{}, false, err
		}
	}
	return s.updateProxy(ctx, func(p *Proxy) {
		p.Enabled = true
		p.Organization = organization
		if uri != "" {
			p.URI = strings.TrimRight(uri, "/")
		}
	})
}

// DisableProxy disables the proxy and reports whether it was enabled.
func (s *Store) DisableProxy(ctx context.Context) (Proxy, bool, error) {
	return s.updateProxy(ctx, func(p *Proxy) { p.Enabled = false })
}

func (s *Store) updateProxy(ctx context.Context, change func(*Proxy)) (Proxy, bool, error) {
	var out Proxy
	changed, err := s.update(ctx, KeyProxy, func(raw []byte, exists bool) ([]byte, error) {
		p := DefaultProxy()
		if exists {
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, fmt.Errorf("decoding proxy settings: %w", err)
			}
		}
		before := p
		change(&p)
		if exists && p == before {
			out = p
			return nil, nil
		}
		now := s.now().UTC().Truncate(time.Second)
		if !exists {
			p.WhenCreated = now
		}
		p.WhenChanged = now
		out = p
		return json.Marshal(p)
	})
	return out, changed, err
}

// UpdateAuth applies change to the auth configuration and saves it. change
// may return an error to abort; nothing is saved then.
func (s *Store) UpdateAuth(ctx context.Context, change func(*Auth) error) (Auth, error) {
	var out Auth
	_, err := s.update(ctx, KeyAuth, func(raw []byte, exists bool) ([]byte, error) {
		a := DefaultAuth()
		if exists {
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, fmt.Errorf("decoding auth settings: %w", err)
			}
		}
		if err := change(&a); err != nil {
			return nil, err
		}
		a.WhenChanged = s.now().UTC().Truncate(time.Second)
		out = a
		return json.Marshal(a)
	})
	return out, err
}

// ValidateURI checks a relay URI: absolute http or https with a host.
func ValidateURI(uri string) error {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%w: uri %q is not an absolute http(s) URL", ErrInvalid, uri)
	}
	return nil
}

func (s *Store) get(ctx context.Context, key string, into any) (uint64, error) {
	entry, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s settings: %w", key, err)
	}
	if err := json.Unmarshal(entry.Value(), into); err != nil {
		return 0, fmt.Errorf("decoding %s settings: %w", key, err)
	}
	return entry.Revision(), nil
}

// update reads key, lets change compute the new value (nil = no change) and
// writes it with a revision check, retrying when another writer won.
func (s *Store) update(ctx context.Context, key string, change func(raw []byte, exists bool) ([]byte, error)) (bool, error) {
	for attempt := 0; attempt < 10; attempt++ {
		var (
			raw []byte
			rev uint64
		)
		entry, err := s.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return false, fmt.Errorf("reading %s settings: %w", key, err)
		default:
			raw, rev = entry.Value(), entry.Revision()
		}
		next, err := change(raw, rev != 0)
		if err != nil {
			return false, err
		}
		if next == nil {
			return false, nil
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, next)
		} else {
			_, err = s.kv.Update(ctx, key, next, rev)
		}
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, fmt.Errorf("saving %s settings: %w", key, err)
		}
	}
	return false, fmt.Errorf("saving %s settings: too many concurrent writers", key)
}
