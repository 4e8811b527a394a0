// Package fcm delivers badges through Firebase Cloud Messaging, HTTP v1 API:
// POST {BaseURL}/v1/projects/<project>/messages:send with an OAuth 2.0
// access token of a service account.
//
// The access token comes from the JWT bearer grant (RFC 7523) at the service
// account's token_uri, signed with its RSA key (golang.org/x/oauth2/jwt); it
// is cached until shortly before it expires. When FCM answers 401
// UNAUTHENTICATED anyway, the rejected token is dropped and the send is
// retried once with a new one.
//
// The message is a data message (the app updates its own badge), with
// android.collapse_key so a newer count replaces an undelivered older one,
// and android.ttl and android.priority from Config:
//
//	{"message":{"token":"...","data":{"unseenEmailCount":"3",
//	  "backgroundSyncType":"Email","language":"es-ES","tenantId":"...",
//	  "notificationId":"..."},
//	  "android":{"collapseKey":"badge","priority":"NORMAL","ttl":"86400s"}}}
//
// backgroundSyncType is "Email" when a background sync is asked for and
// "None" otherwise; empty language, tenantId and notificationId are left out.
package fcm

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"

	"github.com/pushproxy/pushproxy/internal/httpx"
	"github.com/pushproxy/pushproxy/internal/providers"
)

// Name is the provider's name.
const Name = "fcm"

// Defaults for Config.
const (
	DefaultBaseURL     = "https://fcm.googleapis.com"
	DefaultTokenURL    = "https://oauth2.googleapis.com/token"
	DefaultPriority    = "normal"
	DefaultTTL         = 24 * time.Hour
	DefaultCollapseKey = "badge"
)

// Scope is the OAuth 2.0 scope for sending FCM messages.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// QuotaRetryAfter is the least time to wait after QUOTA_EXCEEDED, which FCM
// asks to be retried no sooner than a minute later.
const QuotaRetryAfter = time.Minute

// FCM error codes (google.firebase.fcm.v1.FcmError errorCode).
const (
	ErrorUnregistered        = "UNREGISTERED"
	ErrorInvalidArgument     = "INVALID_ARGUMENT"
	ErrorSenderIDMismatch    = "SENDER_ID_MISMATCH"
	ErrorThirdPartyAuthError = "THIRD_PARTY_AUTH_ERROR"
	ErrorQuotaExceeded       = "QUOTA_EXCEEDED"
	ErrorUnavailable         = "UNAVAILABLE"
	ErrorInternal            = "INTERNAL"
)

// unauthenticated is the google.rpc status of a rejected access token.
const unauthenticated = "UNAUTHENTICATED"

// Config configures the FCM provider.
type Config struct {
	// CredentialsFile is the path of the service account key (JSON, as
	// downloaded from the Firebase console: client_email, private_key,
	// private_key_id, project_id, token_uri). Required. Its contents are never
	// logged.
	CredentialsFile string
	// ProjectID is the Firebase project. Default: project_id of the
	// credentials.
	ProjectID string
	// BaseURL is the FCM API's base URL. Default DefaultBaseURL.
	BaseURL string
	// TokenURL overrides the credentials' token_uri (the OAuth 2.0 token
	// endpoint). Default: token_uri, or DefaultTokenURL if that is empty.
	TokenURL string
	// Priority is android.priority: "normal" (default; delivered when the
	// device is not dozing) or "high" (wakes the device; Android may demote
	// high priority messages that do not show a notification).
	Priority string
	// TTL is how long FCM keeps the badge for an offline device (android.ttl).
	// Default 24h; at most 28 days.
	TTL time.Duration
	// CollapseKey is android.collapse_key. Default "badge".
	CollapseKey string
}

// Provider sends badges to FCM. It is safe for concurrent use.
type Provider struct {
	sendURL     string
	priority    string
	ttl         string
	collapseKey string
	http        *http.Client
	tokens      *tokenCache
	log         zerolog.Logger
	now         func() time.Time
}

var _ providers.Provider = (*Provider)(nil)

// serviceAccount is the part of a service account key file that is used.
type serviceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// New loads the service account key, checks cfg and returns a Provider. It
// does not fetch an access token until the first Send.
func New(cfg Config, opts ...providers.Option) (*Provider, error) {
	o := providers.Apply(opts)
	if err := cfg.check(); err != nil {
		return nil, err
	}
	sa, err := loadServiceAccount(cfg.CredentialsFile)
	if err != nil {
		return nil, err
	}
	project := cmp.Or(cfg.ProjectID, sa.ProjectID)
	if project == "" {
		return nil, errors.New("fcm: ProjectID is required (the credentials have no project_id)")
	}
	tokenURL := cmp.Or(cfg.TokenURL, sa.TokenURI, DefaultTokenURL)
	if u, err := url.Parse(tokenURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("fcm: token URL %q is not an https URL", tokenURL)
	}
	if o.Client == nil {
		o.Client = httpx.NewClient(httpx.ClientConfig{RootCAs: o.RootCAs})
	}
	conf := &jwt.Config{
		Email:        sa.ClientEmail,
		PrivateKey:   []byte(sa.PrivateKey),
		PrivateKeyID: sa.PrivateKeyID,
		Scopes:       []string{Scope},
		TokenURL:     tokenURL,
	}
	return &Provider{
		sendURL:     strings.TrimRight(cfg.BaseURL, "/") + "/v1/projects/" + url.PathEscape(project) + "/messages:send",
		priority:    strings.ToUpper(cfg.Priority),
		ttl:         strconv.FormatInt(int64(cfg.TTL/time.Second), 10) + "s",
		collapseKey: cfg.CollapseKey,
		http:        o.Client,
		tokens:      newTokenCache(conf, o.Client),
		log:         o.Log,
		now:         time.Now,
	}, nil
}

// check validates c and fills in defaults.
func (c *Config) check() error {
	if c.CredentialsFile == "" {
		return errors.New("fcm: CredentialsFile is required")
	}
	c.BaseURL = cmp.Or(c.BaseURL, DefaultBaseURL)
	if u, err := url.Parse(c.BaseURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("fcm: BaseURL %q is not an https URL", c.BaseURL)
	}
	c.Priority = strings.ToLower(cmp.Or(c.Priority, DefaultPriority))
	if c.Priority != "normal" && c.Priority != "high" {
		return fmt.Errorf("fcm: Priority %q is not normal or high", c.Priority)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < 0 || c.TTL > 28*24*time.Hour {
		return fmt.Errorf("fcm: TTL %s is not between 0 and 28 days", c.TTL)
	}
	c.CollapseKey = cmp.Or(c.CollapseKey, DefaultCollapseKey)
	return nil
}

// loadServiceAccount reads and checks a service account key file. Errors
// never quote the file's contents.
func loadServiceAccount(path string) (*serviceAccount, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading FCM credentials: %w", err)
	}
	var sa serviceAccount
	if err := json.Unmarshal(data, &sa); err != nil {
		return nil, fmt.Errorf("loading FCM credentials %s: not a JSON service account key", path)
	}
	if sa.Type != "service_account" || sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, fmt.Errorf("loading FCM credentials %s: not a service account key (type, client_email, private_key)", path)
	}
	block, _ := pem.Decode([]byte(sa.PrivateKey))
	if block == nil {
		return nil, fmt.Errorf("loading FCM credentials %s: private_key is not PEM", path)
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if _, err1 := x509.ParsePKCS1PrivateKey(block.Bytes); err1 != nil {
			return nil, fmt.Errorf("loading FCM credentials %s: private_key: %w", path, err)
		}
	}
	return &sa, nil
}

// Name returns "fcm".
func (p *Provider) Name() string { return Name }

// Close closes idle connections.
func (p *Provider) Close() { p.http.CloseIdleConnections() }

type android struct {
	CollapseKey string `json:"collapseKey"`
	Priority    string `json:"priority"`
	TTL         string `json:"ttl"`
}

type message struct {
	Token   string            `json:"token"`
	Data    map[string]string `json:"data"`
	Android android           `json:"android"`
}

// Send posts the badge to FCM as a data message.
func (p *Provider) Send(ctx context.Context, b providers.Badge) error {
	if b.Device == "" {
		return &providers.Error{Provider: Name, Reason: ErrorUnregistered, Gone: true,
			Err: errors.New("empty registration token")}
	}
	body, err := json.Marshal(struct {
		Message message `json:"message"`
	}{p.message(b)})
	if err != nil {
		return &providers.Error{Provider: Name, Reason: "Payload", AppFault: true, Err: fmt.Errorf("encoding message: %w", err)}
	}
	access, err := p.tokens.token()
	if err != nil {
		return p.tokenError(err)
	}
	err = p.post(ctx, body, access)
	var e *providers.Error
	if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Reason != unauthenticated {
		return err
	}
	p.tokens.invalidate(access)
	p.log.Info().Msg("renewing FCM access token after UNAUTHENTICATED")
	if access, err = p.tokens.token(); err != nil {
		return p.tokenError(err)
	}
	return p.post(ctx, body, access)
}

func (p *Provider) message(b providers.Badge) message {
	data := map[string]string{
		"unseenEmailCount":   strconv.Itoa(max(b.Count, 0)),
		"backgroundSyncType": "None",
	}
	if b.BackgroundSync {
		data["backgroundSyncType"] = "Email"
	}
	for k, v := range map[string]string{"language": b.Language, "tenantId": b.Tenant, "notificationId": b.ID} {
		if v != "" {
			data[k] = v
		}
	}
	return message{
		Token:   b.Device,
		Data:    data,
		Android: android{CollapseKey: p.collapseKey, Priority: p.priority, TTL: p.ttl},
	}
}

// googleError is a google.rpc.Status error body.
type googleError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type      string `json:"@type"`
			ErrorCode string `json:"errorCode"`
		} `json:"details"`
	} `json:"error"`
}

// reason returns the FcmError errorCode if there is one, else the status.
func (g *googleError) reason() string {
	for _, d := range g.Error.Details {
		if strings.HasSuffix(d.Type, "google.firebase.fcm.v1.FcmError") && d.ErrorCode != "" {
			return d.ErrorCode
		}
	}
	return g.Error.Status
}

// post sends one request and classifies the answer.
func (p *Provider) post(ctx context.Context, body []byte, access *oauth2.Token) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.sendURL, bytes.NewReader(body))
	if err != nil {
		return &providers.Error{Provider: Name, Reason: "Request", AppFault: true, Err: fmt.Errorf("building request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	access.SetAuthHeader(req)
	resp, err := p.http.Do(req)
	if err != nil {
		return &providers.Error{Provider: Name, Retryable: true, Err: fmt.Errorf("posting to FCM: %w", err)}
	}
	defer resp.Body.Close()
	data := httpx.ReadBody(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var g googleError
	_ = json.Unmarshal(data, &g) // the status alone classifies a body that is not JSON
	e := &providers.Error{Provider: Name, Status: resp.StatusCode, Reason: g.reason()}
	if e.Reason == "" {
		e.Reason = http.StatusText(resp.StatusCode)
	}
	if g.Error.Message != "" {
		e.Err = errors.New(g.Error.Message)
	}
	rule := providers.Classify(answers, resp.StatusCode, e.Reason)
	e.SetClass(rule.Class)
	if e.Retryable {
		e.RetryAfter, _ = providers.ParseRetryAfter(resp.Header.Get("Retry-After"), p.now())
		e.RetryAfter = max(e.RetryAfter, rule.MinRetryAfter)
	}
	return e
}

// answers maps FCM error responses (HTTP status and FcmError errorCode, or
// the google.rpc status when there is none) to fault classes; the first row
// that matches wins, and an answer no row matches is an app fault. Each
// row has a case in TestAnswers.
var answers = []providers.Rule{
	// The registration token is dead.
	{Reason: ErrorUnregistered, Class: providers.DeviceGone},
	{Status: http.StatusNotFound, Class: providers.DeviceGone},
	// QUOTA_EXCEEDED: back off, the first retry no sooner than a minute.
	{Reason: ErrorQuotaExceeded, Class: providers.Transient, MinRetryAfter: QuotaRetryAfter},
	{Status: http.StatusTooManyRequests, Class: providers.Transient, MinRetryAfter: QuotaRetryAfter},
	{Reason: ErrorUnavailable, Class: providers.Transient},
	{Reason: ErrorInternal, Class: providers.Transient},
	{Status: 500, StatusTo: 599, Class: providers.Transient},
	// THIRD_PARTY_AUTH_ERROR (the APNs key or Web Push credential in the
	// Firebase project), UNAUTHENTICATED after one renewal, PERMISSION_DENIED
	// (the service account may not send for the project).
	{Reason: ErrorThirdPartyAuthError, Class: providers.AppFault},
	{Status: http.StatusUnauthorized, Class: providers.AppFault},
	{Status: http.StatusForbidden, Class: providers.AppFault},
	// INVALID_ARGUMENT and other 4xx: the message as the app sends it.
	{Status: 400, StatusTo: 499, Class: providers.AppFault},
}

// tokenAnswers maps the OAuth 2.0 token endpoint's answers: a 4xx
// (invalid_grant: a revoked or wrong key, an unknown account, clock skew)
// is an app fault, 429 and 5xx are transient. Each row has a case in
// TestTokenAnswers.
var tokenAnswers = []providers.Rule{
	{Status: http.StatusTooManyRequests, Class: providers.Transient},
	{Status: 500, StatusTo: 599, Class: providers.Transient},
	{Status: 400, StatusTo: 499, Class: providers.AppFault},
}

// tokenError classifies a failure to get an access token with
// tokenAnswers; a failure without an answer (network) is transient.
func (p *Provider) tokenError(err error) *providers.Error {
	e := &providers.Error{Provider: Name, Reason: "AccessToken", Err: fmt.Errorf("getting access token: %w", err)}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return e.SetClass(providers.Transient)
	}
	rule := providers.Classify(tokenAnswers, re.Response.StatusCode, re.ErrorCode)
	e.SetClass(rule.Class)
	if e.Retryable {
		e.RetryAfter, _ = providers.ParseRetryAfter(re.Response.Header.Get("Retry-After"), p.now())
	}
	return e
}

// tokenCache holds the access token source; invalidate replaces it so a
// token FCM rejected is not used again.
type tokenCache struct {
	conf *jwt.Config
	ctx  context.Context // carries the HTTP client for the token endpoint

	mu  sync.Mutex
	src oauth2.TokenSource
}

func newTokenCache(conf *jwt.Config, client *http.Client) *tokenCache {
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, client)
	return &tokenCache{conf: conf, ctx: ctx, src: conf.TokenSource(ctx)}
}

// token returns a valid access token, fetching one if needed.
func (c *tokenCache) token() (*oauth2.Token, error) {
	c.mu.Lock()
	src := c.src
	c.mu.Unlock()
	return src.Token()
}

// invalidate drops the cached token if it is still the rejected one
// (another sender may have replaced it already).
func (c *tokenCache) invalidate(rejected *oauth2.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, err := c.src.Token(); err == nil && cur.AccessToken != rejected.AccessToken {
		return
	}
	c.src = c.conf.TokenSource(c.ctx)
}
