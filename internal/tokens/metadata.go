package tokens

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Metadata limits and defaults.
const (
	// MaxMetadataSize is the largest metadata document FetchMetadata reads.
	MaxMetadataSize = 1 << 20
	// DefaultFetchTimeout bounds FetchMetadata when the context has no
	// earlier deadline.
	DefaultFetchTimeout = 10 * time.Second
	// DefaultMetadataTTL is how long a MetadataCache keeps a document when
	// no TTL is given.
	DefaultMetadataTTL = time.Hour
	// MetadataVersion is the version BuildMetadata writes.
	MetadataVersion = "1.0"
	// KeyUsageSigning is the usage of a signing key in Metadata.Keys.
	KeyUsageSigning = "signing"
	// KeyTypeX509 is the key value type of a base64 DER certificate.
	KeyTypeX509 = "x509Certificate"
)

// Metadata is an auth metadata document: who issues tokens, for which
// audiences, with which signing keys, and where its endpoints are. Field
// names match the JSON the peers serve; decoding accepts any letter case
// (e.g. "keyvalue" as well as "keyValue").
type Metadata struct {
	// ID identifies the document.
	ID string `json:"id"`
	// Version is the document format version, "1.0".
	Version string `json:"version"`
	// Name is a display name of the issuer.
	Name string `json:"name"`
	// Realm is the issuer's realm.
	Realm string `json:"realm"`
	// Issuer is <issuer id>@<realm>.
	Issuer string `json:"issuer"`
	// AllowedAudiences lists the audiences tokens may be issued for.
	AllowedAudiences []string `json:"allowedAudiences"`
	// Keys are the signing keys.
	Keys []MetadataKey `json:"keys"`
	// Endpoints are the issuer's endpoints.
	Endpoints []MetadataEndpoint `json:"endpoints"`
}

// MetadataKey is one key of a metadata document.
type MetadataKey struct {
	// Usage is KeyUsageSigning for signing keys.
	Usage string `json:"usage"`
	// KeyInfo identifies the key.
	KeyInfo MetadataKeyInfo `json:"keyinfo"`
	// KeyValue holds the key.
	KeyValue MetadataKeyValue `json:"keyValue"`
}

// MetadataKeyInfo identifies a key by its certificate.
type MetadataKeyInfo struct {
	// X5T is the base64url SHA-1 of the DER certificate.
	X5T string `json:"x5t"`
}

// MetadataKeyValue holds a key.
type MetadataKeyValue struct {
	// Type is KeyTypeX509.
	Type string `json:"type"`
	// Value is the base64 (standard encoding) DER certificate.
	Value string `json:"value"`
}

// MetadataEndpoint is an endpoint of the issuer.
type MetadataEndpoint struct {
	// Location is the endpoint's URL.
	Location string `json:"location"`
	// Protocol is the protocol spoken there, e.g. "OAuth2".
	Protocol string `json:"protocol"`
	// Usage is what the endpoint is for, e.g. "issuance" or "metadata".
	Usage string `json:"usage"`
}

// MetadataOptions configures BuildMetadata. IssuerID and Realm are required.
type MetadataOptions struct {
	// ID identifies the document; when empty it is derived from the issuer,
	// so the same issuer always gets the same ID.
	ID string
	// Name is a display name of the issuer.
	Name string
	// IssuerID and Realm make the issuer, <IssuerID>@<Realm>.
	IssuerID, Realm string
	// AllowedAudiences lists the audiences tokens may be issued for.
	AllowedAudiences []string
	// Certificates are the signing certificates to publish (public parts).
	Certificates []*Certificate
	// Endpoints are the issuer's endpoints.
	Endpoints []MetadataEndpoint
}

// BuildMetadata builds a metadata document.
func BuildMetadata(opts MetadataOptions) (*Metadata, error) {
	if err := checkNames([][2]string{{"issuer id", opts.IssuerID}, {"realm", opts.Realm}}); err != nil {
		return nil, fmt.Errorf("building auth metadata: %w", err)
	}
	issuer := opts.IssuerID + "@" + opts.Realm
	m := &Metadata{
		ID:               opts.ID,
		Version:          MetadataVersion,
		Name:             opts.Name,
		Realm:            opts.Realm,
		Issuer:           issuer,
		AllowedAudiences: append([]string{}, opts.AllowedAudiences...),
		Keys:             make([]MetadataKey, 0, len(opts.Certificates)),
		Endpoints:        append([]MetadataEndpoint{}, opts.Endpoints...),
	}
	if m.ID == "" {
		m.ID = "_" + uuid.NewSHA1(uuid.NameSpaceURL, []byte("pushproxy:s2s:"+issuer)).String()
	}
	for _, c := range opts.Certificates {
		if c == nil || c.X509 == nil {
			return nil, errors.New("building auth metadata: a certificate is nil")
		}
		if _, err := rsaPublicKey(c.X509); err != nil {
			return nil, fmt.Errorf("building auth metadata: certificate %s: %w", c.Thumbprint(), err)
		}
		m.Keys = append(m.Keys, MetadataKey{
			Usage:    KeyUsageSigning,
			KeyInfo:  MetadataKeyInfo{X5T: c.X5T()},
			KeyValue: MetadataKeyValue{Type: KeyTypeX509, Value: base64.StdEncoding.EncodeToString(c.X509.Raw)},
		})
	}
	return m, nil
}

// Certificates parses the signing keys (usage "signing", type
// "x509Certificate") into public certificates. A key whose x5t does not
// match its certificate, or that does not parse, is an error matching
// ErrBadMetadata.
func (m *Metadata) Certificates() ([]*Certificate, error) {
	var certs []*Certificate
	for i, k := range m.Keys {
		if !strings.EqualFold(k.Usage, KeyUsageSigning) || !strings.EqualFold(k.KeyValue.Type, KeyTypeX509) {
			continue
		}
		der, err := base64.StdEncoding.DecodeString(k.KeyValue.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: key %d: value is not base64: %w", ErrBadMetadata, i, err)
		}
		c, err := ParsePublic(der)
		if err != nil {
			return nil, fmt.Errorf("%w: key %d: %w", ErrBadMetadata, i, err)
		}
		if x5t := strings.TrimRight(k.KeyInfo.X5T, "="); x5t != "" && x5t != c.X5T() {
			return nil, fmt.Errorf("%w: key %d: x5t %q does not match its certificate (%s)", ErrBadMetadata, i, k.KeyInfo.X5T, c.X5T())
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// FetchMetadata reads the metadata document at rawURL (an AuthMetadataUrl)
// with client (http.DefaultClient when nil), within DefaultFetchTimeout
// unless ctx ends sooner. It fails with ErrMetadataTooLarge beyond
// MaxMetadataSize and with ErrBadMetadata for a status other than 200, a
// body that is not JSON, a document without an issuer, or signing keys that
// do not parse.
func FetchMetadata(ctx context.Context, client *http.Client, rawURL string) (*Metadata, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("fetching auth metadata: %q is not an http(s) URL", rawURL)
	}
	where := u.Redacted()
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("fetching auth metadata from %s: %w", where, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		// The client's error repeats the URL; name it once, redacted.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("fetching auth metadata from %s: %w", where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching auth metadata from %s: %w: HTTP status %s", where, ErrBadMetadata, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxMetadataSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading auth metadata from %s: %w", where, err)
	}
	if len(body) > MaxMetadataSize {
		return nil, fmt.Errorf("reading auth metadata from %s: %w (limit %d bytes)", where, ErrMetadataTooLarge, MaxMetadataSize)
	}
	var m Metadata
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("decoding auth metadata from %s: %w: %w", where, ErrBadMetadata, err)
	}
	if m.Issuer == "" {
		return nil, fmt.Errorf("decoding auth metadata from %s: %w: no issuer", where, ErrBadMetadata)
	}
	if _, err := m.Certificates(); err != nil {
		return nil, fmt.Errorf("decoding auth metadata from %s: %w", where, err)
	}
	return &m, nil
}

// MetadataCacheOptions configures NewMetadataCache. URL is required.
type MetadataCacheOptions struct {
	// URL is the AuthMetadataUrl.
	URL string
	// Client fetches the document; http.DefaultClient when nil.
	Client *http.Client
	// TTL is how long a fetched document is used; DefaultMetadataTTL when
	// zero.
	TTL time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// MetadataCache keeps the metadata document of one URL for a TTL. It is safe
// for concurrent use; concurrent callers share one fetch.
type MetadataCache struct {
	url    string
	client *http.Client
	ttl    time.Duration
	now    func() time.Time

	lock    chan struct{} // a mutex that waiting callers can give up on
	doc     *Metadata
	expires time.Time
}

// NewMetadataCache returns an empty cache for opts.URL.
func NewMetadataCache(opts MetadataCacheOptions) (*MetadataCache, error) {
	if opts.URL == "" {
		return nil, errors.New("creating auth metadata cache: a URL is required")
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultMetadataTTL
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("creating auth metadata cache: TTL %s is negative", opts.TTL)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &MetadataCache{url: opts.URL, client: opts.Client, ttl: opts.TTL, now: opts.Now, lock: make(chan struct{}, 1)}, nil
}

// Get returns the cached document while it is younger than the TTL, and
// otherwise fetches it again. A failed fetch returns the error and keeps no
// document, so the next Get tries again. The returned document is shared:
// do not modify it.
func (c *MetadataCache) Get(ctx context.Context) (*Metadata, error) {
	select {
	case c.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for auth metadata: %w", ctx.Err())
	}
	defer func() { <-c.lock }()
	if c.doc != nil && c.now().Before(c.expires) {
		return c.doc, nil
	}
	c.doc = nil
	m, err := FetchMetadata(ctx, c.client, c.url)
	if err != nil {
		return nil, err
	}
	c.doc, c.expires = m, c.now().Add(c.ttl)
	return m, nil
}
