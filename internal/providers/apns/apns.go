// Package apns delivers badges through the Apple Push Notification service
// provider API: HTTP/2, token-based authentication.
//
// Provider token: an ES256 JWT (header kid = key id, claims iss = team id and
// iat) signed with the .p8 key, made and cached by
// github.com/sideshow/apns2/token. That package renews the token when it is
// token.TokenTimeout (3000 s = 50 minutes) old (see Token.Expired and
// GenerateIfExpired in its token.go), which is inside Apple's window of no
// more than once every 20 minutes and at least once an hour. When APNs still
// answers 403 ExpiredProviderToken (e.g. clock skew), the token that was
// rejected is renewed once, by one sender, and the push is retried once.
//
// Notification: a badge is a user-visible change, so the push type is always
// "alert" with aps.badge; BackgroundSync adds aps.content-available = 1 to the
// same alert push, which also wakes the app. Apple does not allow a badge in a
// "background" push (push type background must carry only content-available),
// so the background push type is not used. Priority defaults to 5 (delivered
// with power considerations, allowed for background updates); the collapse id
// ("badge") makes a newer badge replace an undelivered older one; apns-id is
// the badge ID when that is a UUID.
//
// The request is built here rather than with apns2.Client: that client's
// Response drops the response headers (Retry-After) and, for an error body
// that is not JSON, the status code as well.
package apns

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"github.com/pushproxy/pushproxy/internal/httpx"
	"github.com/pushproxy/pushproxy/internal/providers"
)

// Name is the provider's name.
const Name = "apns"

// APNs environments for Config.Environment.
const (
	// Sandbox is the development environment (apps signed for development).
	Sandbox = "sandbox"
	// Production is the production environment.
	Production = "production"
)

// Defaults for Config.
const (
	DefaultPriority   = apns2.PriorityLow
	DefaultTTL        = 24 * time.Hour
	DefaultCollapseID = "badge"
)

// maxDeviceToken bounds the length of a device token, in hex characters.
const maxDeviceToken = 200

// Config configures the APNs provider.
type Config struct {
	// KeyFile is the path of the token signing key (.p8 file: a P-256 private
	// key in PKCS #8 PEM) downloaded from the Apple developer account.
	// Required. Its contents are never logged.
	KeyFile string
	// KeyID is the 10-character key identifier of KeyFile (JWT header kid).
	// Required.
	KeyID string
	// TeamID is the developer team identifier (JWT claim iss). Required.
	TeamID string
	// Topic is the app's bundle identifier (apns-topic). Required.
	Topic string
	// Environment is Sandbox or Production. Required unless Host is set: a
	// device token of one environment is "BadDeviceToken" in the other, which
	// would remove every subscription.
	Environment string
	// Host overrides the environment's base URL, e.g.
	// "https://api.sandbox.push.apple.com:443" or a test server's URL.
	Host string
	// Priority is apns-priority: 5 (default), 10 or 1.
	Priority int
	// TTL is how long APNs keeps the badge for an offline device
	// (apns-expiration = now + TTL). Default 24h.
	TTL time.Duration
	// CollapseID is apns-collapse-id (at most 64 bytes). Default "badge".
	CollapseID string
}

// Provider sends badges to APNs. It is safe for concurrent use and should be
// kept for the life of the process: APNs expects long-lived connections.
type Provider struct {
	cfg   Config
	host  string
	token *token.Token
	http  *http.Client
	log   zerolog.Logger
	now   func() time.Time
}

var _ providers.Provider = (*Provider)(nil)

// New loads the signing key, checks cfg and returns a Provider. It does not
// connect to APNs.
func New(cfg Config, opts ...providers.Option) (*Provider, error) {
	o := providers.Apply(opts)
	host, err := cfg.check()
	if err != nil {
		return nil, err
	}
	key, err := token.AuthKeyFromFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading APNs auth key %s: %w", cfg.KeyFile, err)
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("loading APNs auth key %s: not a P-256 key", cfg.KeyFile)
	}
	tok := &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
	if _, err := tok.Generate(); err != nil {
		return nil, fmt.Errorf("signing APNs provider token: %w", err)
	}
	if o.Client == nil {
		o.Client = httpx.NewClient(httpx.ClientConfig{HTTP2Only: true, RootCAs: o.RootCAs})
	}
	return &Provider{cfg: cfg, host: host, token: tok, http: o.Client, log: o.Log, now: time.Now}, nil
}

// check validates c, fills in defaults and returns the base URL.
func (c *Config) check() (string, error) {
	switch {
	case c.KeyFile == "":
		return "", errors.New("apns: KeyFile is required")
	case c.KeyID == "":
		return "", errors.New("apns: KeyID is required")
	case c.TeamID == "":
		return "", errors.New("apns: TeamID is required")
	case c.Topic == "":
		return "", errors.New("apns: Topic is required")
	}
	if c.Priority == 0 {
		c.Priority = DefaultPriority
	}
	if c.Priority != 1 && c.Priority != 5 && c.Priority != 10 {
		return "", fmt.Errorf("apns: Priority %d is not 1, 5 or 10", c.Priority)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < time.Second {
		return "", fmt.Errorf("apns: TTL %s is under a second", c.TTL)
	}
	if c.CollapseID == "" {
		c.CollapseID = DefaultCollapseID
	}
	if len(c.CollapseID) > 64 {
		return "", errors.New("apns: CollapseID is longer than 64 bytes")
	}
	if c.Host != "" {
		u, err := url.Parse(c.Host)
		if err != nil || u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			return "", fmt.Errorf("apns: Host %q is not an https://host[:port] URL", c.Host)
		}
		return "https://" + u.Host, nil
	}
	switch c.Environment {
	case Sandbox:
		return apns2.HostDevelopment, nil
	case Production:
		return apns2.HostProduction, nil
	}
	return "", fmt.Errorf("apns: Environment %q is not %q or %q", c.Environment, Sandbox, Production)
}

// Name returns "apns".
func (p *Provider) Name() string { return Name }

// Close closes idle connections to APNs.
func (p *Provider) Close() { p.http.CloseIdleConnections() }

type aps struct {
	Badge            int `json:"badge"`
	ContentAvailable int `json:"content-available,omitempty"`
}

type payload struct {
	APS aps `json:"aps"`
}

// Send posts the badge to APNs. On 403 ExpiredProviderToken it renews the
// provider token and tries once more.
func (p *Provider) Send(ctx context.Context, b providers.Badge) error {
	if !validDeviceToken(b.Device) {
		return &providers.Error{Provider: Name, Reason: apns2.ReasonBadDeviceToken, Gone: true,
			Err: errors.New("device token is not a hexadecimal string")}
	}
	pl := payload{APS: aps{Badge: max(b.Count, 0)}}
	if b.BackgroundSync {
		pl.APS.ContentAvailable = 1
	}
	body, err := json.Marshal(pl)
	if err != nil {
		return &providers.Error{Provider: Name, Reason: "Payload", AppFault: true, Err: fmt.Errorf("encoding payload: %w", err)}
	}
	bearer := p.token.GenerateIfExpired()
	err = p.post(ctx, b, body, bearer)
	var e *providers.Error
	if !errors.As(err, &e) || e.Status != http.StatusForbidden || e.Reason != apns2.ReasonExpiredProviderToken {
		return err
	}
	return p.post(ctx, b, body, p.renew(bearer))
}

// renew replaces the provider token if it is still the rejected one (another
// sender may have renewed it already) and returns the current token.
func (p *Provider) renew(rejected string) string {
	p.token.Lock()
	defer p.token.Unlock()
	if p.token.Bearer != rejected {
		return p.token.Bearer
	}
	if _, err := p.token.Generate(); err != nil {
		// Only a missing key fails, and New checked it; keep the old token.
		p.log.Error().Err(err).Msg("renewing APNs provider token")
		return p.token.Bearer
	}
	p.log.Info().Str("key_id", p.cfg.KeyID).Msg("renewed APNs provider token after ExpiredProviderToken")
	return p.token.Bearer
}

// post sends one request and classifies the answer.
func (p *Provider) post(ctx context.Context, b providers.Badge, body []byte, bearer string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.host+"/3/device/"+b.Device, bytes.NewReader(body))
	if err != nil {
		return &providers.Error{Provider: Name, Reason: "Request", AppFault: true, Err: fmt.Errorf("building request: %w", err)}
	}
	h := req.Header
	h.Set("authorization", "bearer "+bearer)
	h.Set("content-type", "application/json")
	h.Set("apns-push-type", string(apns2.PushTypeAlert))
	h.Set("apns-priority", strconv.Itoa(p.cfg.Priority))
	h.Set("apns-topic", p.cfg.Topic)
	h.Set("apns-collapse-id", p.cfg.CollapseID)
	h.Set("apns-expiration", strconv.FormatInt(p.now().Add(p.cfg.TTL).Unix(), 10))
	if id, err := uuid.Parse(b.ID); err == nil {
		h.Set("apns-id", id.String())
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return &providers.Error{Provider: Name, Retryable: true, Err: fmt.Errorf("posting to APNs: %w", err)}
	}
	defer resp.Body.Close()
	data := httpx.ReadBody(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var r struct {
		Reason    string `json:"reason"`
		Timestamp int64  `json:"timestamp"`
	}
	_ = json.Unmarshal(data, &r) // the status alone classifies a body that is not JSON
	e := &providers.Error{Provider: Name, Status: resp.StatusCode, Reason: r.Reason}
	if e.Reason == "" {
		e.Reason = http.StatusText(resp.StatusCode)
	}
	e.SetClass(providers.Classify(answers, resp.StatusCode, r.Reason).Class)
	if e.Gone && r.Timestamp > 0 {
		e.GoneSince = time.UnixMilli(r.Timestamp)
	}
	if e.Retryable {
		e.RetryAfter, _ = providers.ParseRetryAfter(resp.Header.Get("Retry-After"), p.now())
	}
	return e
}

// answers maps APNs error responses to fault classes; the first row that
// matches wins, and an answer no row matches is an app fault. Each row has
// a case in TestAnswers.
var answers = []providers.Rule{
	// 410 Unregistered / ExpiredToken: the token is dead (the relay
	// compares its timestamp with the subscription).
	{Status: http.StatusGone, Class: providers.DeviceGone},
	// The token is not an APNs token at all.
	{Status: http.StatusBadRequest, Reason: apns2.ReasonBadDeviceToken, Class: providers.DeviceGone},
	// A token of another app, or every token when the topic is wrong: the
	// app's configuration, not proof that the device is gone.
	{Status: http.StatusBadRequest, Reason: apns2.ReasonDeviceTokenNotForTopic, Class: providers.AppFault},
	// InvalidProviderToken, ExpiredProviderToken (after one renewal),
	// MissingProviderToken, BadCertificate, BadCertificateEnvironment.
	{Status: http.StatusForbidden, Class: providers.AppFault},
	// TooManyRequests, TooManyProviderTokenUpdates.
	{Status: http.StatusTooManyRequests, Class: providers.Transient},
	// InternalServerError, ServiceUnavailable, Shutdown.
	{Status: 500, StatusTo: 599, Class: providers.Transient},
	// Other 400s (BadTopic, BadCollapseId, ...), 404, 405, 413: the request
	// as the app is configured.
	{Status: 400, StatusTo: 499, Class: providers.AppFault},
}

// validDeviceToken reports whether s looks like an APNs device token: hex
// digits only, so it is safe in the request path.
func validDeviceToken(s string) bool {
	if s == "" || len(s) > maxDeviceToken {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
