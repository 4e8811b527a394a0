package ews

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Counter defaults.
const (
	// DefaultCountConcurrency is how many GetFolder requests a Counts call
	// has in flight.
	DefaultCountConcurrency = 4
	// DefaultCountAttempts is how often a busy server is asked for one
	// mailbox before the counter gives up.
	DefaultCountAttempts = 4
	// DefaultRetryWait is the first wait after a busy answer without
	// BackOffMilliseconds; it doubles with each further attempt.
	DefaultRetryWait = 2 * time.Second
	// DefaultMaxRetryWait is the longest wait the counter accepts; a
	// longer back-off fails the mailbox at once.
	DefaultMaxRetryWait = 5 * time.Minute
	// MaxAnswer bounds an EWS answer (GetFolder, Subscribe), in bytes.
	MaxAnswer = 1 << 20
	// counterTimeout bounds one request when no client is given.
	counterTimeout = time.Minute
)

// ErrServerBusy matches (errors.Is) the Count error of a mailbox the
// server kept answering ErrorServerBusy (or a bare 429 or 503) for, and
// the Manager's error of such a request.
var ErrServerBusy = errors.New("EWS server busy")

// TokenSource gives the Counter and the Manager OAuth access tokens for
// EWS; *tokens.AppTokenSource with tokens.EWSScope is one.
type TokenSource = sources.TokenSource

// Access is how an EWS server is reached, by the Counter and the
// Manager alike. URL and either Tokens or Username and Password are
// required.
type Access struct {
	// URL is the EWS endpoint, e.g.
	// https://outlook.office365.com/EWS/Exchange.asmx.
	URL string
	// Tenants are the tenants whose mailboxes this Exchange holds; other
	// tenants' mailboxes are not served. Empty: every tenant.
	Tenants []string
	// Tokens gives OAuth tokens (app-only: full_access_as_app); with it
	// every request impersonates the mailbox's user.
	Tokens TokenSource
	// Username and Password authenticate with Basic instead, or with
	// NTLM when NTLM is set (Username as DOMAIN\user or user@domain).
	Username string
	Password string
	NTLM     bool
	// Impersonate adds ExchangeImpersonation (the mailbox's address) to
	// Basic requests, for a service account with the
	// ApplicationImpersonation role; without it the account needs
	// delegate access to the mailboxes.
	Impersonate bool
}

// check checks a and returns its tenants, normalized.
func (a Access) check() ([]string, error) {
	if err := checkAccess(a.URL, a.Tokens, a.Username, a.Password, a.NTLM); err != nil {
		return nil, err
	}
	return checkTenants(a.Tenants)
}

// CounterConfig configures a Counter. Access is required.
type CounterConfig struct {
	Access
	// Concurrency bounds the requests in flight
	// (DefaultCountConcurrency when 0).
	Concurrency int
	// MaxAttempts, RetryWait and MaxRetryWait bound the retries after
	// busy answers (DefaultCountAttempts, DefaultRetryWait,
	// DefaultMaxRetryWait when 0).
	MaxAttempts  int
	RetryWait    time.Duration
	MaxRetryWait time.Duration
	// Client sends the requests; a client with a one-minute timeout when
	// nil.
	Client *http.Client
	// Sleep waits d or until ctx ends (returning its error); a timer when
	// nil. Tests replace it so that they never wait.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Log receives a debug line per busy answer.
	Log zerolog.Logger
	// Metrics, when set, receives the counter's metrics.
	Metrics prometheus.Registerer
}

// Counter reads the unread counts of Exchange mailboxes' folders with one
// EWS GetFolder request per mailbox, a few at a time. When the server
// answers ErrorServerBusy it waits BackOffMilliseconds before any further
// request, then asks again. It implements sources.Counter and is safe for
// concurrent use.
type Counter struct {
	cfg     CounterConfig
	tenants []string
	metrics *counterMetrics
	soap    *soapClient
}

var _ sources.Counter = (*Counter)(nil)

// NewCounter checks cfg and registers the metrics.
func NewCounter(cfg CounterConfig) (*Counter, error) {
	tenants, err := cfg.check()
	if err != nil {
		return nil, fmt.Errorf("ews counter: %w", err)
	}
	c := &Counter{tenants: tenants}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultCountConcurrency
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultCountAttempts
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = DefaultRetryWait
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = DefaultMaxRetryWait
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: counterTimeout}
	}
	if cfg.Client, err = authClient(cfg.Client, cfg.NTLM, cfg.Concurrency); err != nil {
		return nil, fmt.Errorf("ews counter: %w", err)
	}
	if cfg.Sleep == nil {
		cfg.Sleep = service.Sleep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if c.metrics, err = newCounterMetrics(cfg.Metrics); err != nil {
		return nil, err
	}
	c.cfg = cfg
	c.soap = &soapClient{url: cfg.URL, tokens: cfg.Tokens, username: cfg.Username, password: cfg.Password,
		impersonate: cfg.Impersonate || cfg.Tokens != nil, client: cfg.Client, maxAttempts: cfg.MaxAttempts,
		retryWait: cfg.RetryWait, maxRetryWait: cfg.MaxRetryWait, sleep: cfg.Sleep, now: cfg.Now, log: cfg.Log,
		who: "the unread counter", busy: c.metrics.busy}
	return c, nil
}

// Name is "ews".
func (c *Counter) Name() string { return "ews" }

// Counts reads the unread count of each mailbox, at most Concurrency at a
// time. A mailbox is served when its tenant is one of Tenants (or Tenants
// is empty), its user an SMTP address and its name events.Inbox or a
// distinguished folder name (drafts, sentitems, deleteditems, junkemail,
// outbox); a mailbox Exchange does not know is not served either.
func (c *Counter) Counts(ctx context.Context, boxes []sources.Mailbox) []sources.Count {
	counts := make([]sources.Count, len(boxes))
	slots := make(chan struct{}, c.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, box := range boxes {
		folder, ok := c.serves(box)
		if !ok {
			counts[i].Err = sources.ErrNotServed
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			counts[i].Err = ctx.Err()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			counts[i] = c.count(ctx, box.User, folder)
		}()
	}
	wg.Wait()
	return counts
}

// serves returns the distinguished folder of box when the counter serves
// it.
func (c *Counter) serves(box sources.Mailbox) (string, bool) {
	if len(c.tenants) > 0 && !slices.Contains(c.tenants, normalTenant(box.Tenant)) {
		return "", false
	}
	if events.ValidateAddress("user", box.User) != nil || !strings.Contains(box.User, "@") {
		return "", false
	}
	return distinguishedFolder(box.Name)
}

// count reads the unread count of one folder, asking again while the
// server is busy.
func (c *Counter) count(ctx context.Context, user, folder string) sources.Count {
	what := user + " " + folder
	a, status, err := roundTrip(ctx, c.soap, GetFolderAction, user, GetFolderRequest(user, folder, c.soap.impersonate), DecodeGetFolder)
	switch {
	case err != nil:
		return sources.Count{Err: c.failure(ctx, what, err)}
	case a.ResponseClass == ClassError:
		return sources.Count{Err: c.refusal(what, status, a)}
	}
	return sources.Count{Unread: a.UnreadCount}
}

// refusal is the Count error of an error answer: ErrNotServed for a
// mailbox Exchange does not have, a *ResponseError otherwise.
func (c *Counter) refusal(what string, status int, a *FolderAnswer) error {
	re := &ResponseError{HTTPStatus: status, Code: a.ResponseCode, Message: a.MessageText}
	switch a.ResponseCode {
	case CodeNonExistentMailbox, CodeMailboxNotFound, CodeInvalidSMTPAddress:
		return fmt.Errorf("%w: %w", sources.ErrNotServed, re)
	}
	return fmt.Errorf("counting the unread messages of %s: %w", what, re)
}

// failure is the Count error after err: ctx's error when it ended.
func (c *Counter) failure(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("counting the unread messages of %s: %w", what, err)
}

// ResponseError is an EWS error answer: its response code and text, and
// the HTTP status it came with.
type ResponseError struct {
	HTTPStatus int
	Code       string
	Message    string
}

func (e *ResponseError) Error() string {
	s := "EWS answered " + e.Code
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// distinguishedFolder maps a mailbox name to an EWS distinguished folder
// id: events.Inbox (and an empty name) to inbox, a mail folder's
// distinguished id (in any case) to itself; ok is false for other names.
func distinguishedFolder(name string) (string, bool) {
	if name == "" || name == events.Inbox {
		return "inbox", true
	}
	switch lower := strings.ToLower(name); lower {
	case "inbox", "drafts", "sentitems", "deleteditems", "junkemail", "outbox":
		return lower, true
	}
	return "", false
}

// normalTenant is a tenant as events normalise it.
func normalTenant(t string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(t)), ".")
}
