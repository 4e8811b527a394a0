// Package webpush delivers badges to browsers with Web Push: RFC 8030
// (protocol), RFC 8291 (aes128gcm message encryption) and RFC 8292 (VAPID).
//
// The device address is the browser's PushSubscription as JSON
// ({"endpoint":...,"keys":{"p256dh":...,"auth":...}}). The payload is
// encrypted for that subscription only:
//
//	{"unseenEmailCount":3,"backgroundSyncType":"Email","language":"es-ES",
//	 "tenantId":"...","notificationId":"..."}
//
// with backgroundSyncType "Email" or "None" and empty fields left out. The
// request carries TTL, Urgency and Topic ("badge", so a newer count replaces
// an undelivered older one) and "Authorization: vapid t=<JWT>, k=<public
// key>"; the ES256 JWT has aud = the endpoint's origin, exp = now + 12 hours
// and sub = Config.Subject, and is reused per origin until an hour before it
// expires.
//
// Encryption and VAPID are implemented here with the standard library
// (crypto/ecdh, crypto/hkdf, AES-GCM) and golang-jwt, rather than with
// github.com/SherClockHolmes/webpush-go v1.4.0, which has these flaws: it
// turns a subscriber of "mailto:x@y" into "mailto:mailto:x@y" (it prefixes
// "mailto:" to anything that does not start with "https:"); it ignores its
// VapidExpiration option (exp is always now + 12 h); it pads every message to
// a 4 KB body; and its salt and ephemeral key cannot be fixed, so its output
// cannot be checked against the RFC 8291 example. This package's encryption
// reproduces that example byte for byte (see the tests).
//
// Endpoints come from device subscriptions, i.e. from outside: they must be
// https, may be limited to Config.AllowedHosts, and the default HTTP client
// refuses to connect to loopback, private, link-local and other non-public
// addresses. The check is made at dial time on the resolved address (a
// net.Dialer Control function), so a DNS name that resolves to a private
// address is refused too. Such a refusal is an app fault with reason
// ReasonEndpointNotPublic, not a dead device: whether an address is refused
// depends on the relay's policy and its view of DNS, not on the
// subscription, so it must not remove subscriptions (a relay that
// resolves a push service to a private address would otherwise remove
// every Web Push subscription). WithInsecureEndpoints lifts the https and
// address rules for tests.
package webpush

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushproxy/pushproxy/internal/httpx"
	"github.com/pushproxy/pushproxy/internal/providers"
)

// Name is the provider's name.
const Name = "webpush"

// Defaults for Config.
const (
	DefaultTTL     = 24 * time.Hour
	DefaultUrgency = "normal"
	DefaultTopic   = "badge"
)

// VAPID token lifetime: exp is this far ahead (at most 24 hours by RFC 8292);
// a token is reused until tokenRenewBefore is left.
const (
	TokenLifetime    = 12 * time.Hour
	tokenRenewBefore = time.Hour
	// maxCachedTokens bounds the per-origin token cache; endpoints come from
	// outside, so their origins are not trusted to be few.
	maxCachedTokens = 64
)

// Reasons of errors found before anything is sent.
const (
	// ReasonInvalidSubscription: the device is not a usable subscription
	// (malformed JSON, not https, bad keys). The error is Gone.
	ReasonInvalidSubscription = "InvalidSubscription"
	// ReasonEndpointNotAllowed: the endpoint's host is not in
	// AllowedHosts. The error is an app fault.
	ReasonEndpointNotAllowed = "EndpointNotAllowed"
	// ReasonEndpointNotPublic: the endpoint resolved to a non-public
	// address and the connection was refused (see the package comment).
	// The error is an app fault: the relay's outbound policy refused it,
	// which says nothing about the device.
	ReasonEndpointNotPublic = "EndpointNotPublic: the endpoint resolves to a loopback, private, link-local or unspecified address, which the relay does not connect to"
)

// Config configures the Web Push provider.
type Config struct {
	// PrivateKeyFile is the path of the VAPID private key: base64url of the
	// 32-byte P-256 scalar (as VAPID key generators print it, see
	// GenerateVAPIDKeys) or PEM (PKCS #8 or SEC 1). Required. Its contents
	// are never logged.
	PrivateKeyFile string
	// PublicKeyFile is the path of the VAPID public key (base64url of the
	// 65-byte uncompressed point, or PEM). Optional: the public key is
	// derived from the private one; if given, it must match.
	PublicKeyFile string
	// Subject is the VAPID sub claim, a contact for the push service:
	// "mailto:ops@example.com" or an https URL. Required.
	Subject string
	// TTL is how long the push service keeps the badge for an offline
	// browser (TTL header, whole seconds). Default 24h.
	TTL time.Duration
	// Urgency is the Urgency header: very-low, low, normal (default) or high.
	Urgency string
	// Topic is the Topic header (at most 32 base64url characters). Default
	// "badge".
	Topic string
	// AllowedHosts optionally limits the push services badges are sent to:
	// an entry is a host name ("fcm.googleapis.com") or, starting with a dot
	// or "*.", a domain and its subdomains (".push.services.mozilla.com").
	// Empty allows any public host.
	AllowedHosts []string
}

// Provider sends badges with Web Push. It is safe for concurrent use.
type Provider struct {
	key       *ecdsa.PrivateKey
	publicKey string // base64url uncompressed point
	subject   string
	ttl       string
	urgency   string
	topic     string
	allowed   []string
	insecure  bool
	http      *http.Client
	now       func() time.Time

	mu     sync.Mutex
	tokens map[string]vapidToken // by audience (endpoint origin)
}

type vapidToken struct {
	header string // the whole Authorization value
	exp    time.Time
}

var _ providers.Multiplexer = (*Provider)(nil)

// New loads the VAPID keys, checks cfg and returns a Provider.
func New(cfg Config, opts ...providers.Option) (*Provider, error) {
	o := providers.Apply(opts)
	if err := cfg.check(); err != nil {
		return nil, err
	}
	key, pub, err := loadKeys(cfg.PrivateKeyFile, cfg.PublicKeyFile)
	if err != nil {
		return nil, err
	}
	if o.Client == nil {
		cc := httpx.ClientConfig{DialControl: publicAddressesOnly, RootCAs: o.RootCAs}
		if o.InsecureEndpoints {
			cc.DialControl = nil
		}
		o.Client = httpx.NewClient(cc)
	}
	allowed := make([]string, 0, len(cfg.AllowedHosts))
	for _, h := range cfg.AllowedHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if rest, ok := strings.CutPrefix(h, "*"); ok {
			h = rest
		}
		if h != "" && h != "." {
			allowed = append(allowed, h)
		}
	}
	return &Provider{
		key:       key,
		publicKey: base64.RawURLEncoding.EncodeToString(pub),
		subject:   cfg.Subject,
		ttl:       strconv.FormatInt(int64(cfg.TTL/time.Second), 10),
		urgency:   cfg.Urgency,
		topic:     cfg.Topic,
		allowed:   allowed,
		insecure:  o.InsecureEndpoints,
		http:      o.Client,
		now:       time.Now,
		tokens:    make(map[string]vapidToken),
	}, nil
}

// check validates c and fills in defaults.
func (c *Config) check() error {
	if c.PrivateKeyFile == "" {
		return errors.New("webpush: PrivateKeyFile is required")
	}
	if !strings.HasPrefix(c.Subject, "mailto:") && !strings.HasPrefix(c.Subject, "https://") {
		return fmt.Errorf("webpush: Subject %q is not a mailto: or https: URL", c.Subject)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < time.Second {
		return fmt.Errorf("webpush: TTL %s is under a second", c.TTL)
	}
	c.Urgency = cmp.Or(c.Urgency, DefaultUrgency)
	switch c.Urgency {
	case "very-low", "low", "normal", "high":
	default:
		return fmt.Errorf("webpush: Urgency %q is not very-low, low, normal or high", c.Urgency)
	}
	c.Topic = cmp.Or(c.Topic, DefaultTopic)
	if len(c.Topic) > 32 || strings.Trim(c.Topic, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return fmt.Errorf("webpush: Topic %q is not at most 32 base64url characters", c.Topic)
	}
	return nil
}

// loadKeys reads the VAPID key files and returns the private key and the
// uncompressed public point.
func loadKeys(privateFile, publicFile string) (*ecdsa.PrivateKey, []byte, error) {
	data, err := os.ReadFile(privateFile)
	if err != nil {
		return nil, nil, fmt.Errorf("loading VAPID private key: %w", err)
	}
	key, err := parsePrivateKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("loading VAPID private key %s: %w", privateFile, err)
	}
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("loading VAPID private key %s: %w", privateFile, err)
	}
	if publicFile == "" {
		return key, pub, nil
	}
	data, err = os.ReadFile(publicFile)
	if err != nil {
		return nil, nil, fmt.Errorf("loading VAPID public key: %w", err)
	}
	given, err := parsePublicKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("loading VAPID public key %s: %w", publicFile, err)
	}
	if !bytes.Equal(given, pub) {
		return nil, nil, fmt.Errorf("VAPID public key %s does not match the private key", publicFile)
	}
	return key, pub, nil
}

// Name returns "webpush".
func (p *Provider) Name() string { return Name }

// PublicKey returns the VAPID public key, base64url encoded: the
// applicationServerKey a web page passes to PushManager.subscribe.
func (p *Provider) PublicKey() string { return p.publicKey }

// Close closes idle connections.
func (p *Provider) Close() { p.http.CloseIdleConnections() }

// Subscription is a browser's PushSubscription, as PushSubscription.toJSON()
// gives it.
type Subscription struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256DH string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

// subscriber is a parsed and checked Subscription.
type subscriber struct {
	endpoint *url.URL
	p256dh   []byte
	auth     []byte
}

// ParseSubscription parses and checks a subscription's JSON: an https
// endpoint, a P-256 public key and a 16-byte auth secret. Errors never quote
// the keys.
func ParseSubscription(device string) (Subscription, error) {
	s, _, err := parseSubscription(device, false)
	return s, err
}

// parseSubscription is ParseSubscription, allowing an http endpoint when
// allowHTTP.
func parseSubscription(device string, allowHTTP bool) (Subscription, *subscriber, error) {
	var s Subscription
	if err := json.Unmarshal([]byte(device), &s); err != nil {
		return s, nil, errors.New("subscription is not JSON")
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || !(u.Scheme == "https" || allowHTTP && u.Scheme == "http") || u.Hostname() == "" || u.User != nil {
		return s, nil, errors.New("subscription endpoint is not an https URL")
	}
	p256dh, err := decodeBase64(s.Keys.P256DH)
	if err != nil || len(p256dh) != publicKeySize {
		return s, nil, errors.New("subscription p256dh is not a base64url uncompressed P-256 point")
	}
	if _, err := ecdh.P256().NewPublicKey(p256dh); err != nil {
		return s, nil, errors.New("subscription p256dh is not a point on P-256")
	}
	auth, err := decodeBase64(s.Keys.Auth)
	if err != nil || len(auth) != authSecretSize {
		return s, nil, errors.New("subscription auth is not a base64url 16-byte secret")
	}
	return s, &subscriber{endpoint: u, p256dh: p256dh, auth: auth}, nil
}

type payload struct {
	UnseenEmailCount   int    `json:"unseenEmailCount"`
	BackgroundSyncType string `json:"backgroundSyncType"`
	Language           string `json:"language,omitempty"`
	TenantID           string `json:"tenantId,omitempty"`
	NotificationID     string `json:"notificationId,omitempty"`
}

// Service names the push service of the subscription in b.Device: its
// endpoint's host (with the port, when the endpoint has one). It reads
// the endpoint only; Send checks the whole subscription.
func (p *Provider) Service(b providers.Badge) (string, bool) {
	var s struct {
		Endpoint string `json:"endpoint"`
	}
	if json.Unmarshal([]byte(b.Device), &s) != nil {
		return "", false
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Hostname() == "" {
		return "", false
	}
	return strings.ToLower(u.Host), true
}

// Send encrypts the badge for the subscription in b.Device and posts it to
// the subscription's endpoint.
func (p *Provider) Send(ctx context.Context, b providers.Badge) error {
	_, sub, err := parseSubscription(b.Device, p.insecure)
	if err != nil {
		return &providers.Error{Provider: Name, Reason: ReasonInvalidSubscription, Gone: true, Err: err}
	}
	if !p.hostAllowed(sub.endpoint.Hostname()) {
		return &providers.Error{Provider: Name, Reason: ReasonEndpointNotAllowed, AppFault: true,
			Err: fmt.Errorf("push service %s is not in the allowed hosts", sub.endpoint.Hostname())}
	}
	pl := payload{
		UnseenEmailCount:   max(b.Count, 0),
		BackgroundSyncType: "None",
		Language:           b.Language,
		TenantID:           b.Tenant,
		NotificationID:     b.ID,
	}
	if b.BackgroundSync {
		pl.BackgroundSyncType = "Email"
	}
	plain, err := json.Marshal(pl)
	if err != nil {
		return &providers.Error{Provider: Name, Reason: "Payload", AppFault: true, Err: fmt.Errorf("encoding payload: %w", err)}
	}
	body, err := seal(plain, sub.p256dh, sub.auth)
	if err != nil {
		return &providers.Error{Provider: Name, Reason: "Encryption", AppFault: true, Err: fmt.Errorf("encrypting payload: %w", err)}
	}
	auth, err := p.authorization(sub.endpoint)
	if err != nil {
		return &providers.Error{Provider: Name, Reason: "VAPID", AppFault: true, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.endpoint.String(), bytes.NewReader(body))
	if err != nil {
		return &providers.Error{Provider: Name, Reason: "Request", AppFault: true, Err: fmt.Errorf("building request: %w", err)}
	}
	h := req.Header
	h.Set("Authorization", auth)
	h.Set("Content-Encoding", "aes128gcm")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("TTL", p.ttl)
	h.Set("Urgency", p.urgency)
	h.Set("Topic", p.topic)
	resp, err := p.http.Do(req)
	if err != nil {
		if errors.Is(err, errNotPublic) {
			// Refused by the relay's policy, not by the push service: an
			// app fault, so that no subscription is removed for it.
			return &providers.Error{Provider: Name, Reason: ReasonEndpointNotPublic, AppFault: true, Err: err}
		}
		return &providers.Error{Provider: Name, Retryable: true, Err: fmt.Errorf("posting to push service: %w", err)}
	}
	defer resp.Body.Close()
	data := httpx.ReadBody(resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	e := &providers.Error{Provider: Name, Status: resp.StatusCode, Reason: http.StatusText(resp.StatusCode)}
	if msg := summary(data); msg != "" {
		e.Err = errors.New(msg)
	}
	e.SetClass(providers.Classify(answers, resp.StatusCode, "").Class)
	if e.Retryable {
		e.RetryAfter, _ = providers.ParseRetryAfter(resp.Header.Get("Retry-After"), p.now())
	}
	return e
}

// answers maps a push service's status to fault classes; the first row
// that matches wins, and a status no row matches is an app fault. Each row
// has a case in TestAnswers.
var answers = []providers.Rule{
	// The subscription has expired or was unsubscribed (RFC 8030).
	{Status: http.StatusNotFound, Class: providers.DeviceGone},
	{Status: http.StatusGone, Class: providers.DeviceGone},
	{Status: http.StatusTooManyRequests, Class: providers.Transient},
	{Status: 500, StatusTo: 599, Class: providers.Transient},
	// 401/403: the VAPID key or JWT was refused (RFC 8292).
	{Status: http.StatusUnauthorized, Class: providers.AppFault},
	{Status: http.StatusForbidden, Class: providers.AppFault},
	// 400, 413 and other 4xx: the request as the relay builds it.
	{Status: 400, StatusTo: 499, Class: providers.AppFault},
}

// summary returns the start of an error body on one line, for the error.
func summary(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// hostAllowed reports whether host is in the allowed hosts (all are when
// none are configured).
func (p *Provider) hostAllowed(host string) bool {
	if len(p.allowed) == 0 {
		return true
	}
	host = strings.ToLower(host)
	for _, a := range p.allowed {
		if host == a || strings.HasPrefix(a, ".") && (strings.HasSuffix(host, a) || host == a[1:]) {
			return true
		}
	}
	return false
}

// authorization returns the VAPID Authorization value for endpoint's origin,
// reusing a token until it is close to expiring.
func (p *Provider) authorization(endpoint *url.URL) (string, error) {
	aud := endpoint.Scheme + "://" + endpoint.Host
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.tokens[aud]; ok && now.Add(tokenRenewBefore).Before(t.exp) {
		return t.header, nil
	}
	exp := now.Add(TokenLifetime)
	signed, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"aud": aud,
		"exp": exp.Unix(),
		"sub": p.subject,
	}).SignedString(p.key)
	if err != nil {
		return "", fmt.Errorf("signing VAPID token: %w", err)
	}
	if len(p.tokens) >= maxCachedTokens {
		clear(p.tokens)
	}
	t := vapidToken{header: "vapid t=" + signed + ", k=" + p.publicKey, exp: exp}
	p.tokens[aud] = t
	return t.header, nil
}

// errNotPublic is returned by publicAddressesOnly.
var errNotPublic = errors.New("address is not public")

// cgnat is the shared address space of RFC 6598, not reachable publicly.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// publicAddressesOnly is a dial control that refuses loopback, private,
// link-local, multicast, unspecified and shared addresses, so endpoints from
// subscriptions cannot reach the relay's own network.
func publicAddressesOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", address, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", address, err)
	}
	ip = ip.Unmap()
	if !ip.IsGlobalUnicast() || ip.IsPrivate() || cgnat.Contains(ip) {
		return fmt.Errorf("dialing %s: %w", address, errNotPublic)
	}
	return nil
}
