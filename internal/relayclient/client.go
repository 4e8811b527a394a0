package relayclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pushproxy/pushproxy/internal/httpx"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/version"
)

// Defaults of Config.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultBreakerFailures = 5
	// A down relay costs one trial request per cool-down, so the cool-down
	// can stay short: the relay's return is noticed within seconds.
	DefaultBreakerCooldown    = time.Second
	DefaultBreakerMaxCooldown = 4 * time.Second
)

// PingAfter is how long a connection to the relay may be silent before
// it is pinged, and how long the ping may go unanswered before the
// connection is closed and its requests made again on another: a relay
// replica that hangs (stopped, its kernel still accepting connections)
// holds them about two seconds rather than the whole Timeout. A relay
// that runs answers pings at once, however long its push services take.
const PingAfter = time.Second

// MaxResponseSize bounds the body of a successful answer that is read; a
// larger one is an error.
const MaxResponseSize = 4 << 20

// maxFaultSize bounds the body of a failed answer that is read.
const maxFaultSize = 64 << 10

// Internal causes, wrapped in an *Error, that Classify explains.
var (
	errInvalidURI  = errors.New("invalid service URI")
	errBadResponse = errors.New("answer is not a publish response")
	errBadBatch    = errors.New("invalid batch")
)

// TokenSource gives a bearer S2S token; *tokens.Issuer implements it.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// Config configures a Client. Zero fields take the defaults.
type Config struct {
	// Tokens gives the bearer token of each request. Required: without it
	// every publish fails with ClassAuthentication.
	Tokens TokenSource
	// HTTPClient sends the requests. Default: a client with keep-alive and
	// connection reuse, HTTP/2 when the relay speaks TLS, TLS 1.2 or later,
	// the environment's HTTP proxy, and redirects not followed (a relay does
	// not redirect; a redirect means the Uri is wrong). Its Timeout, if any,
	// applies on top of Timeout.
	HTTPClient *http.Client
	// UserAgent names the proxy. Default "pushproxy/<version>" (see
	// internal/version).
	UserAgent string
	// Timeout bounds one attempt, the answer's body included. Default 10s.
	Timeout time.Duration

	// BreakerFailures is how many consecutive temporary failures open the
	// circuit breaker. Default 5; negative disables the breaker.
	BreakerFailures int
	// BreakerCooldown is how long the breaker first stays open; it doubles
	// each time it opens again without a success in between. Default 1s.
	BreakerCooldown time.Duration
	// BreakerMaxCooldown caps the cool-down. Default 4s, so that a relay
	// that comes back is tried again within seconds (and never less than
	// BreakerCooldown); an open breaker costs one trial per cool-down. A relay's own back-off hint may hold the
	// breaker open longer, up to relayproto.MaxBackOff.
	BreakerMaxCooldown time.Duration
	// Now is the clock of the breaker and of Retry-After dates. Default
	// time.Now.
	Now func() time.Time
	// WriteGate, if set, is asked before every write on the default
	// HTTP client's connections (httpx.ClientConfig.WriteGate); a request
	// it stops fails without counting against the relay in the breaker.
	WriteGate func() error
}

// Client publishes notifications to the relay. It is safe for concurrent
// use; share one per relay so that its connections and its circuit breaker
// are shared.
type Client struct {
	tokens    TokenSource
	hc        *http.Client
	userAgent string
	timeout   time.Duration
	now       func() time.Time
	gate      func() error
	breaker   *breaker
}

// New returns a Client with cfg's zero fields set to the defaults.
func New(cfg Config) *Client {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Timeout, DefaultTimeout)
	def(&cfg.BreakerCooldown, DefaultBreakerCooldown)
	def(&cfg.BreakerMaxCooldown, DefaultBreakerMaxCooldown)
	cfg.BreakerMaxCooldown = max(cfg.BreakerMaxCooldown, cfg.BreakerCooldown)
	switch {
	case cfg.BreakerFailures == 0:
		cfg.BreakerFailures = DefaultBreakerFailures
	case cfg.BreakerFailures < 0:
		cfg.BreakerFailures = math.MaxInt
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient(cfg.Timeout, cfg.WriteGate)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = version.UserAgent()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{
		tokens:    cfg.Tokens,
		hc:        cfg.HTTPClient,
		userAgent: cfg.UserAgent,
		timeout:   cfg.Timeout,
		now:       cfg.Now,
		gate:      cfg.WriteGate,
		breaker: &breaker{
			threshold:   cfg.BreakerFailures,
			cooldown:    cfg.BreakerCooldown,
			maxCooldown: cfg.BreakerMaxCooldown,
			now:         cfg.Now,
		},
	}
}

// defaultHTTPClient is a client for one long-lived relay connection pool,
// each request bounded by timeout, redirects not followed.
func defaultHTTPClient(timeout time.Duration, gate func() error) *http.Client {
	return httpx.NewClient(httpx.ClientConfig{Timeout: timeout, MaxIdleConnsPerHost: 32, NoRedirects: true, PingAfter: PingAfter, WriteGate: gate})
}

// State is the circuit breaker's state, for metrics.
func (c *Client) State() BreakerState { return c.breaker.State() }

// BreakerOpenUntil is when the open circuit breaker will let a trial
// request through; the zero time when it is not open.
func (c *Client) BreakerOpenUntil() time.Time { return c.breaker.OpenUntil() }

// Healthy reports whether a publish made now would be sent rather than
// refused by the circuit breaker: the breaker is closed, or half-open with
// no trial in flight. The dispatcher takes new work only while it is true.
func (c *Client) Healthy() bool { return c.breaker.Ready() }

// ResetBreaker closes the circuit breaker and forgets its failures: the
// relay's Uri changed, so what the breaker learnt is about another relay.
func (c *Client) ResetBreaker() { c.breaker.reset() }

// Publish sends one batch once to uri+relayproto.PublishPath, where uri is
// the proxy Uri (for example https://relay.example/PushNotifications). A
// 2xx answer gives the relay's per-notification, per-device results, which
// the caller must look at: a device may be gone or need a retry. Any other
// outcome is an error: an *Error for everything about the request and the
// relay, or the context's error when ctx ended first.
func (c *Client) Publish(ctx context.Context, uri string, batch []relayproto.Notification) (relayproto.Response, error) {
	if err := ctx.Err(); err != nil {
		return relayproto.Response{}, fmt.Errorf("publishing to %s: %w", uri, err)
	}
	endpoint, err := publishURL(uri)
	if err != nil {
		return relayproto.Response{}, &Error{Class: ClassPushNotifications, URI: uri, Err: err}
	}
	if err := checkBatch(batch); err != nil {
		return relayproto.Response{}, &Error{Class: ClassUnknown, URI: uri, Err: err}
	}
	body, err := json.Marshal(relayproto.Request{Notifications: batch})
	if err != nil {
		return relayproto.Response{}, &Error{Class: ClassUnknown, URI: uri, Err: fmt.Errorf("encoding the request: %w", err)}
	}
	trial, err := c.breaker.allow(uri)
	if err != nil {
		return relayproto.Response{}, err
	}
	resp, o, err := c.send(ctx, uri, endpoint, body)
	if err != nil && c.gate != nil && c.gate() != nil {
		// Stopped on our side, before its bytes went out: it says
		// nothing about the relay.
		o = outcomeNeutral
	}
	var hint time.Duration
	var e *Error
	if errors.As(err, &e) {
		hint = e.RetryAfter
	}
	c.breaker.done(trial, o, err, hint)
	return resp, err
}

// publishURL checks uri and appends the publish path.
func publishURL(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errInvalidURI, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("%w: %q is not an absolute http or https URL", errInvalidURI, uri)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: %q has a query or fragment", errInvalidURI, uri)
	}
	return strings.TrimRight(uri, "/") + relayproto.PublishPath, nil
}

// checkBatch refuses what the relay would refuse anyway.
func checkBatch(batch []relayproto.Notification) error {
	switch {
	case len(batch) == 0:
		return fmt.Errorf("%w: no notifications", errBadBatch)
	case len(batch) > relayproto.MaxNotificationsPerRequest:
		return fmt.Errorf("%w: %d notifications, at most %d per request", errBadBatch, len(batch), relayproto.MaxNotificationsPerRequest)
	}
	for _, n := range batch {
		if len(n.Recipients) > relayproto.MaxRecipients {
			return fmt.Errorf("%w: notification %q has %d recipients, at most %d", errBadBatch, n.ID, len(n.Recipients), relayproto.MaxRecipients)
		}
	}
	return nil
}

// send makes one attempt and says what it tells the breaker.
func (c *Client) send(ctx context.Context, uri, endpoint string, body []byte) (relayproto.Response, outcome, error) {
	if c.tokens == nil {
		return relayproto.Response{}, outcomeNeutral, &Error{Class: ClassAuthentication, URI: uri, Err: errors.New("no S2S token source configured")}
	}
	token, err := c.tokens.Token(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return relayproto.Response{}, outcomeNeutral, fmt.Errorf("publishing to %s: getting an S2S token: %w", uri, err)
		}
		return relayproto.Response{}, outcomeNeutral, &Error{Class: ClassAuthentication, URI: uri, Err: fmt.Errorf("getting an S2S token: %w", err)}
	}

	id := uuid.NewString()
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return relayproto.Response{}, outcomeNeutral, &Error{Class: ClassPushNotifications, URI: uri, Err: fmt.Errorf("%w: %w", errInvalidURI, err)}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set(relayproto.HeaderClientRequestID, id)
	req.Header.Set(relayproto.HeaderReturnClientRequestID, "True")

	// transportErr turns a failure to send or to read the answer into an
	// error: the caller's if the caller gave up, otherwise Networking.
	transportErr := func(err error) (relayproto.Response, outcome, error) {
		if ctx.Err() != nil {
			return relayproto.Response{}, outcomeNeutral, fmt.Errorf("publishing to %s [client-request-id %s]: %w", uri, id, ctx.Err())
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the *Error already
		}
		if errors.Is(actx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s: %w", c.timeout, err)
		}
		return relayproto.Response{}, outcomeFailed, &Error{Class: ClassNetworking, URI: uri, RequestID: id, Err: err}
	}

	res, err := c.do(req)
	if err != nil {
		return transportErr(err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxFaultSize))
		_ = res.Body.Close()
	}()

	if res.StatusCode < 200 || res.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(res.Body, maxFaultSize))
		e := c.statusError(uri, id, res, data)
		if e.Temporary() {
			return relayproto.Response{}, outcomeFailed, e
		}
		return relayproto.Response{}, outcomeAlive, e
	}

	data, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseSize+1))
	if err != nil {
		return transportErr(fmt.Errorf("reading the answer: %w", err))
	}
	bad := func(err error) (relayproto.Response, outcome, error) {
		return relayproto.Response{}, outcomeAlive, &Error{Class: ClassPushNotifications, URI: uri, Status: res.StatusCode, RequestID: id, Err: err}
	}
	if len(data) > MaxResponseSize {
		return bad(fmt.Errorf("%w: larger than %d bytes", errBadResponse, MaxResponseSize))
	}
	var resp relayproto.Response
	if len(data) == 0 && res.StatusCode == http.StatusNoContent {
		return resp, outcomeAlive, nil
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return bad(fmt.Errorf("%w: %w", errBadResponse, err))
	}
	return resp, outcomeAlive, nil
}

// maxUnsentRetries is how many times a request that failed before any of
// it went out is sent again at once: its connection could not be made (a
// dial or a TLS handshake that failed or timed out, such as to a relay
// replica that hangs while its kernel still accepts connections). The
// relay never saw it, and behind a balancer a new connection may reach
// another replica.
const maxUnsentRetries = 2

// do sends req, again at once up to maxUnsentRetries times while it fails
// before its headers were written.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	for try := 0; ; try++ {
		var wrote atomic.Bool
		r := req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }}))
		if try > 0 {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r.Body = body
		}
		res, err := c.hc.Do(r)
		if err == nil || wrote.Load() || try == maxUnsentRetries || req.Context().Err() != nil {
			return res, err
		}
	}
}

// statusError is the error of a non-2xx answer with body data.
func (c *Client) statusError(uri, id string, res *http.Response, data []byte) *Error {
	e := &Error{
		Class:     classForStatus(res.StatusCode),
		URI:       uri,
		Status:    res.StatusCode,
		RequestID: id,
	}
	if e.Status == http.StatusUnauthorized {
		e.Challenge = strings.Join(res.Header.Values("WWW-Authenticate"), ", ")
	}
	if e.Status >= 300 && e.Status < 400 {
		e.Err = fmt.Errorf("redirected to %q", res.Header.Get("Location"))
	}
	e.Fault = parseFault(data, e.Temporary())
	hint := parseRetryAfter(res.Header.Get("Retry-After"), c.now())
	if e.Fault != nil {
		hint = max(hint, e.Fault.BackOff())
	}
	e.RetryAfter = hint
	return e
}

// faultBody is a relay fault as sent, telling an absent CanRetry from false.
type faultBody struct {
	Message                   string
	CanRetry                  *bool
	BackOffTimeInMilliseconds int64
}

// parseFault decodes a fault body; nil when data is not one. An absent
// CanRetry is canRetry.
func parseFault(data []byte, canRetry bool) *relayproto.Fault {
	var fb faultBody
	if json.Unmarshal(data, &fb) != nil || (fb.Message == "" && fb.CanRetry == nil && fb.BackOffTimeInMilliseconds == 0) {
		return nil
	}
	f := &relayproto.Fault{Message: fb.Message, CanRetry: canRetry, BackOffTimeInMilliseconds: fb.BackOffTimeInMilliseconds}
	if fb.CanRetry != nil {
		f.CanRetry = *fb.CanRetry
	}
	return f
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date,
// capped at relayproto.MaxBackOff; 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs > int64(relayproto.MaxBackOff/time.Second) {
			return relayproto.MaxBackOff
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), relayproto.MaxBackOff)
}
