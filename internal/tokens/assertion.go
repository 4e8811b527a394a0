package tokens

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pushproxy/pushproxy/internal/clip"
)

// App-only tokens of the Microsoft identity platform: the OAuth 2.0 client
// credentials grant, the client authenticated by a secret or by a JWT
// assertion signed with its certificate.
const (
	// DefaultAuthority is the base URL of Microsoft Entra ID's token
	// endpoints, <authority>/<tenant>/oauth2/v2.0/token.
	DefaultAuthority = "https://login.microsoftonline.com"
	// GraphScope asks for a Microsoft Graph token with the application
	// permissions granted to the app.
	GraphScope = "https://graph.microsoft.com/.default"
	// EWSScope asks for an Exchange Online (EWS) token.
	EWSScope = "https://outlook.office365.com/.default"
	// ClientAssertionType is the client_assertion_type of a JWT client
	// assertion (RFC 7523).
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// AssertionLifetime is how long a client assertion is valid; Entra
	// asks for at most 5 to 10 minutes.
	AssertionLifetime = 10 * time.Minute
	// MaxTokenResponse bounds a token endpoint's answer, in bytes.
	MaxTokenResponse = 64 << 10
	// appTokenRenewMargin is how long before its expiry a cached token is
	// replaced (at most half its lifetime).
	appTokenRenewMargin = 5 * time.Minute
	// appTokenTimeout bounds one token request when no HTTP client is given.
	appTokenTimeout = 30 * time.Second
)

// ClientAssertion signs a client assertion for clientID with cert: an RS256
// JWT whose header carries x5t (the base64url SHA-1 thumbprint of cert),
// with aud the token endpoint, iss and sub the client id, a random jti,
// nbf and iat now and exp AssertionLifetime later.
func ClientAssertion(cert *Certificate, clientID, tokenEndpoint string, now time.Time) (string, error) {
	if cert == nil || cert.X509 == nil || cert.Key == nil {
		return "", fmt.Errorf("signing a client assertion: %w", ErrNoPrivateKey)
	}
	if now.Before(cert.X509.NotBefore) || now.After(cert.X509.NotAfter) {
		return "", fmt.Errorf("signing a client assertion: certificate %s is valid from %s until %s: %w",
			cert.Thumbprint(), cert.X509.NotBefore.UTC().Format(time.RFC3339), cert.X509.NotAfter.UTC().Format(time.RFC3339), ErrCertificateExpired)
	}
	token := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"aud": tokenEndpoint,
		"iss": clientID,
		"sub": clientID,
		"jti": uuid.NewString(),
		"nbf": now.Unix(),
		"iat": now.Unix(),
		"exp": now.Add(AssertionLifetime).Unix(),
	})
	token.Header["x5t"] = cert.X5T()
	signed, err := token.SignedString(cert.Key)
	if err != nil {
		return "", fmt.Errorf("signing a client assertion: %w", err)
	}
	return signed, nil
}

// AppTokenOptions configures NewAppTokenSource. TenantID, ClientID, Scope
// and either Certificate or Secret are required.
type AppTokenOptions struct {
	// Authority is the base URL of the token endpoints; DefaultAuthority
	// when empty (tests point it at a local server).
	Authority string
	// TenantID is the Entra tenant (directory) id, a GUID or a domain.
	TenantID string
	// ClientID is the app's (client) id.
	ClientID string
	// Certificate, with its private key, signs client assertions.
	Certificate *Certificate
	// Secret is a client secret, used when Certificate is nil.
	Secret string
	// Scope is the resource's .default scope, e.g. GraphScope or EWSScope.
	Scope string
	// Client sends the token requests; a client with a 30-second timeout
	// when nil.
	Client *http.Client
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// LoadCredential puts the app's credential from files into o: the
// certificate of the PEM file certFile with its private key from keyFile
// (certFile when empty), or the client secret of secretFile (its first
// line ending trimmed). Exactly one of certFile and secretFile is needed.
func (o *AppTokenOptions) LoadCredential(certFile, keyFile, secretFile string) error {
	switch {
	case certFile != "" && secretFile != "":
		return errors.New("loading the app's credential: give a certificate or a client secret, not both")
	case certFile != "":
		if keyFile == "" {
			keyFile = certFile
		}
		cert, err := LoadPEM(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("loading the app's credential: %w", err)
		}
		o.Certificate = cert
	case secretFile != "":
		data, err := os.ReadFile(secretFile)
		if err != nil {
			return fmt.Errorf("loading the app's client secret: %w", err)
		}
		if o.Secret = strings.TrimRight(string(data), "\r\n"); o.Secret == "" {
			return fmt.Errorf("loading the app's client secret: %s is empty", secretFile)
		}
	case keyFile != "":
		return errors.New("loading the app's credential: a private key without its certificate")
	default:
		return errors.New("loading the app's credential: a certificate or a client secret file is required")
	}
	return nil
}

// AppTokenSource gets app-only access tokens by the client credentials
// grant and caches each until shortly before it expires. One request to
// the token endpoint is in flight at a time; callers that need a token
// meanwhile wait for it (or for their context). It is safe for concurrent
// use.
type AppTokenSource struct {
	opts     AppTokenOptions
	endpoint string

	// refresh holds one token while a caller asks the token endpoint.
	refresh chan struct{}

	mu      sync.Mutex
	token   string
	renewAt time.Time
}

// NewAppTokenSource checks opts and returns a source; it asks for no token
// yet.
func NewAppTokenSource(opts AppTokenOptions) (*AppTokenSource, error) {
	if opts.Authority == "" {
		opts.Authority = DefaultAuthority
	}
	base, err := url.Parse(opts.Authority)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("configuring app tokens: authority %q is not an http(s) URL", opts.Authority)
	}
	if err := checkNames([][2]string{{"tenant id", opts.TenantID}, {"client id", opts.ClientID}}); err != nil {
		return nil, fmt.Errorf("configuring app tokens: %w", err)
	}
	if strings.TrimSpace(opts.Scope) == "" {
		return nil, errors.New("configuring app tokens: a scope is required")
	}
	switch {
	case opts.Certificate != nil:
		if opts.Certificate.Key == nil {
			return nil, fmt.Errorf("configuring app tokens: %w", ErrNoPrivateKey)
		}
	case opts.Secret == "":
		return nil, errors.New("configuring app tokens: a certificate or a client secret is required")
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: appTokenTimeout}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &AppTokenSource{
		opts:     opts,
		endpoint: strings.TrimRight(opts.Authority, "/") + "/" + url.PathEscape(opts.TenantID) + "/oauth2/v2.0/token",
		refresh:  make(chan struct{}, 1),
	}, nil
}

// Endpoint is the token endpoint the source posts to, also the audience
// of its client assertions.
func (s *AppTokenSource) Endpoint() string { return s.endpoint }

// Token returns an access token, from the cache while it is fresh,
// otherwise a new one from the token endpoint. An error answer of the
// endpoint is a *TokenError.
func (s *AppTokenSource) Token(ctx context.Context) (string, error) {
	if token := s.cached(); token != "" {
		return token, nil
	}
	select {
	case s.refresh <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for an app token: %w", ctx.Err())
	}
	defer func() { <-s.refresh }()
	// Another caller may have refreshed it while this one waited.
	if token := s.cached(); token != "" {
		return token, nil
	}
	token, lifetime, err := s.fetch(ctx)
	if err != nil {
		return "", err
	}
	margin := min(appTokenRenewMargin, lifetime/2)
	s.mu.Lock()
	s.token, s.renewAt = token, s.opts.Now().Add(lifetime-margin)
	s.mu.Unlock()
	return token, nil
}

// Forget drops token from the cache when it is still the cached one, so
// that the next Token asks for a new one: for a token a resource refused
// (401) before it expired.
func (s *AppTokenSource) Forget(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == token {
		s.token, s.renewAt = "", time.Time{}
	}
}

func (s *AppTokenSource) cached() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && s.opts.Now().Before(s.renewAt) {
		return s.token
	}
	return ""
}

// fetch asks the token endpoint for a token and returns it with its
// lifetime.
func (s *AppTokenSource) fetch(ctx context.Context) (string, time.Duration, error) {
	form := url.Values{
		"grant_type": {"client_credentials"},
		"client_id":  {s.opts.ClientID},
		"scope":      {s.opts.Scope},
	}
	if s.opts.Certificate != nil {
		assertion, err := ClientAssertion(s.opts.Certificate, s.opts.ClientID, s.endpoint, s.opts.Now())
		if err != nil {
			return "", 0, err
		}
		form.Set("client_assertion_type", ClientAssertionType)
		form.Set("client_assertion", assertion)
	} else {
		form.Set("client_secret", s.opts.Secret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, fmt.Errorf("requesting an app token: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("requesting an app token from %s: %w", s.endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxTokenResponse+1))
	if err != nil {
		return "", 0, fmt.Errorf("reading the token endpoint's answer: %w", err)
	}
	if len(body) > MaxTokenResponse {
		return "", 0, fmt.Errorf("reading the token endpoint's answer: longer than %d bytes", MaxTokenResponse)
	}
	token, lifetime, err := ParseTokenResponse(resp.StatusCode, body)
	if err != nil {
		return "", 0, fmt.Errorf("requesting an app token from %s: %w", s.endpoint, err)
	}
	return token, lifetime, nil
}

// TokenError is an error answer of a token endpoint (RFC 6749 section
// 5.2): its HTTP status and error code, e.g. invalid_client, with Entra's
// description (AADSTS...) and correlation id when given.
type TokenError struct {
	Status        int
	Code          string
	Description   string
	CorrelationID string
}

func (e *TokenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token endpoint answered %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if e.CorrelationID != "" {
		b.WriteString(" (correlation id " + e.CorrelationID + ")")
	}
	return b.String()
}

// tokenAnswer is a token endpoint's JSON answer, success or error.
type tokenAnswer struct {
	AccessToken   string          `json:"access_token"`
	TokenType     string          `json:"token_type"`
	ExpiresIn     json.RawMessage `json:"expires_in"`
	Error         string          `json:"error"`
	Description   string          `json:"error_description"`
	CorrelationID string          `json:"correlation_id"`
}

// ParseTokenResponse reads a token endpoint's answer: the access token and
// its lifetime from a 200 answer, a *TokenError from any other. The token
// must be a Bearer token of printable ASCII without spaces, its lifetime
// (expires_in, a number or a numeric string) non-negative.
func ParseTokenResponse(status int, body []byte) (string, time.Duration, error) {
	var a tokenAnswer
	jsonErr := json.NewDecoder(bytes.NewReader(body)).Decode(&a)
	if status != http.StatusOK {
		te := &TokenError{Status: status}
		if jsonErr == nil {
			te.Code, te.Description, te.CorrelationID = clip.Text(a.Error), clip.Text(a.Description), clip.Text(a.CorrelationID)
		} else {
			te.Description = clip.Text(string(body))
		}
		return "", 0, te
	}
	if jsonErr != nil {
		return "", 0, fmt.Errorf("decoding the token answer: %w", jsonErr)
	}
	if a.AccessToken == "" {
		return "", 0, errors.New("the token answer has no access_token")
	}
	if !isToken68(a.AccessToken) {
		return "", 0, errors.New("the token answer's access_token holds characters a header cannot carry")
	}
	if a.TokenType != "" && !strings.EqualFold(a.TokenType, "Bearer") {
		return "", 0, fmt.Errorf("the token answer's token_type is %q, not Bearer", clip.Text(a.TokenType))
	}
	lifetime, err := parseExpiresIn(a.ExpiresIn)
	if err != nil {
		return "", 0, err
	}
	return a.AccessToken, lifetime, nil
}

// parseExpiresIn reads expires_in, seconds as a JSON number or a numeric
// string (Entra's v1 endpoints wrote strings); absent means zero, a token
// that is not cached.
func parseExpiresIn(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	text := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, fmt.Errorf("the token answer's expires_in: %w", err)
		}
	}
	secs, err := strconv.ParseInt(text, 10, 64)
	if err != nil || secs < 0 || secs > int64(MaxLifetime/time.Second)*7 {
		return 0, fmt.Errorf("the token answer's expires_in %q is not a number of seconds", clip.Text(text))
	}
	return time.Duration(secs) * time.Second, nil
}

// isToken68 reports whether s is printable ASCII without spaces, safe in
// an Authorization header.
func isToken68(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
