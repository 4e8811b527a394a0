package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// DefaultAPIURL is the Graph API the counter reads by default.
const DefaultAPIURL = "https://graph.microsoft.com/v1.0"

// Counter defaults.
const (
	// DefaultCountAttempts is how often a mailbox is asked for before its
	// throttling is given up on.
	DefaultCountAttempts = 4
	// DefaultRetryWait is the first wait after a throttling answer
	// without Retry-After; it doubles with each further attempt.
	DefaultRetryWait = 2 * time.Second
	// DefaultMaxRetryWait is the longest wait the counter accepts; Graph
	// asking for longer fails the mailboxes at once.
	DefaultMaxRetryWait = 5 * time.Minute
	// counterTimeout bounds one $batch request when no client is given.
	counterTimeout = time.Minute
)

// ErrThrottled matches (errors.Is) the Count error of a mailbox Graph kept
// throttling.
var ErrThrottled = errors.New("throttled by Graph")

// TokenSource gives the counter its app-only access tokens;
// *tokens.AppTokenSource is one.
type TokenSource = sources.TokenSource

// CounterConfig configures a Counter. Users and Tokens are required.
type CounterConfig struct {
	// Users maps mailboxes to Graph users (a UserIndex of the source's
	// directory); a user it does not know is not served.
	Users UserFinder
	// TenantID is the Entra tenant id of the app. A user whose directory
	// entry names another tenant id is not served: the app's token cannot
	// read it.
	TenantID string
	// Tokens gives app-only tokens for GraphScope with Mail.ReadBasic.All
	// (or Mail.Read) application permission.
	Tokens TokenSource
	// APIURL is the Graph API base URL; DefaultAPIURL when empty.
	APIURL string
	// Client sends the requests; a client with a one-minute timeout when
	// nil.
	Client *http.Client
	// MaxAttempts, RetryWait and MaxRetryWait bound the retries of
	// throttled requests (DefaultCountAttempts, DefaultRetryWait,
	// DefaultMaxRetryWait when 0).
	MaxAttempts  int
	RetryWait    time.Duration
	MaxRetryWait time.Duration
	// Sleep waits d or until ctx ends (returning its error); a timer when
	// nil. Tests replace it so that they never wait.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now returns the current time, for Retry-After dates; time.Now when
	// nil.
	Now func() time.Time
	// Log receives a debug line per throttling answer.
	Log zerolog.Logger
	// Metrics, when set, receives the counter's metrics.
	Metrics prometheus.Registerer
}

// Counter reads the unread counts of Graph users' mail folders
// (mailFolder.unreadItemCount), MaxBatchRequests to a $batch request, with
// an app-only token. A throttled request (429, or 503 and 504) is asked
// again after the wait Graph names in Retry-After, alone with the other
// throttled requests of its batch. It implements sources.Counter and is
// safe for concurrent use.
type Counter struct {
	cfg      CounterConfig
	batchURL string
	http     *graphClient
	metrics  *counterMetrics
}

var _ sources.Counter = (*Counter)(nil)

// NewCounter checks cfg and registers the metrics.
func NewCounter(cfg CounterConfig) (*Counter, error) {
	if cfg.Users == nil {
		return nil, errors.New("graph counter: a user directory is required")
	}
	if cfg.Tokens == nil {
		return nil, errors.New("graph counter: a token source is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	api, err := url.Parse(cfg.APIURL)
	if err != nil || (api.Scheme != "https" && api.Scheme != "http") || api.Host == "" || api.RawQuery != "" || api.Fragment != "" {
		return nil, fmt.Errorf("graph counter: API URL %q is not an http(s) URL", cfg.APIURL)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: counterTimeout}
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
	if cfg.Sleep == nil {
		cfg.Sleep = service.Sleep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newCounterMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	return &Counter{cfg: cfg, batchURL: strings.TrimRight(cfg.APIURL, "/") + "/$batch", http: cfg.graphClient(), metrics: m}, nil
}

// graphClient is the HTTP side of a checked CounterConfig.
func (cfg *CounterConfig) graphClient() *graphClient {
	return &graphClient{tokens: cfg.Tokens, client: cfg.Client, retryWait: cfg.RetryWait,
		maxRetryWait: cfg.MaxRetryWait, sleep: cfg.Sleep, now: cfg.Now}
}

// Name is "graph".
func (c *Counter) Name() string { return "graph" }

// query is the request for one mailbox's count.
type query struct {
	index int    // in the boxes of Counts
	id    string // in the batch
	url   string
	what  string // the mailbox, for errors
	last  error  // the last throttling answer
}

// Counts reads the unread count of each mailbox: its user must be in the
// directory and its name events.Inbox or a well-known folder name
// (drafts, sentitems, ...); other mailboxes are not served, nor users
// Graph does not know (404).
func (c *Counter) Counts(ctx context.Context, boxes []sources.Mailbox) []sources.Count {
	counts := make([]sources.Count, len(boxes))
	var pending []query
	for i, b := range boxes {
		q, err := c.lookup(ctx, i, b)
		if err != nil {
			counts[i].Err = err
			continue
		}
		pending = append(pending, q)
	}
	for start := 0; start < len(pending); start += MaxBatchRequests {
		c.countBatch(ctx, pending[start:min(start+MaxBatchRequests, len(pending))], counts)
	}
	return counts
}

// lookup finds the Graph request for box.
func (c *Counter) lookup(ctx context.Context, index int, box sources.Mailbox) (query, error) {
	folder, ok := wellKnownFolder(box.Name)
	if !ok {
		return query{}, sources.ErrNotServed
	}
	u, err := c.cfg.Users.FindUser(ctx, box.Tenant, box.User)
	if errors.Is(err, ErrUnknownUser) {
		return query{}, sources.ErrNotServed
	}
	if err != nil {
		return query{}, fmt.Errorf("finding the Graph user of %s: %w", box.User, err)
	}
	if u.TenantID != "" && isGUID(c.cfg.TenantID) && !strings.EqualFold(u.TenantID, c.cfg.TenantID) {
		return query{}, sources.ErrNotServed
	}
	return query{
		index: index,
		id:    strconv.Itoa(index),
		url:   "/users/" + url.PathEscape(u.ID) + "/mailFolders/" + folder + "?$select=unreadItemCount",
		what:  box.User + " " + folder,
	}, nil
}

// countBatch reads the counts of at most MaxBatchRequests mailboxes into
// counts, asking again for the throttled ones until they are answered or
// out of attempts.
func (c *Counter) countBatch(ctx context.Context, pending []query, counts []sources.Count) {
	fail := func(qs []query, errOf func(q query) error) {
		for _, q := range qs {
			counts[q.index].Err = errOf(q)
		}
	}
	reauthorized := false
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			fail(pending, func(query) error { return err })
			return
		}
		answer, err := c.send(ctx, pending)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			fail(pending, func(query) error { return err })
			return
		}
		var (
			next []query
			wait time.Duration
		)
		switch {
		case answer.status == http.StatusOK:
			batch, err := DecodeBatch(answer.body)
			if err != nil {
				fail(pending, func(q query) error { return fmt.Errorf("counting the unread messages of %s: %w", q.what, err) })
				return
			}
			next, wait = c.settle(batch, pending, counts, attempt)
		case isThrottle(answer.status):
			c.metrics.throttledBy(answer.status)
			last := apiError(answer.status, answer.body)
			next, wait = pending, c.http.waitFor(answer.header.Get("Retry-After"), attempt)
			for i := range next {
				next[i].last = last
			}
		case answer.status == http.StatusUnauthorized && !reauthorized && c.http.canForget():
			// The token may have been revoked before it expired: ask for a
			// new one, once.
			c.http.forget(answer.token)
			reauthorized = true
			attempt--
			continue
		default:
			last := apiError(answer.status, answer.body)
			fail(pending, func(q query) error { return fmt.Errorf("counting the unread messages of %s: %w", q.what, last) })
			return
		}
		if len(next) == 0 {
			return
		}
		if attempt >= c.cfg.MaxAttempts {
			fail(next, func(q query) error {
				return fmt.Errorf("counting the unread messages of %s: %w after %d attempts: %w", q.what, ErrThrottled, attempt, q.last)
			})
			return
		}
		c.cfg.Log.Debug().Int("requests", len(next)).Dur("wait", wait).Int("attempt", attempt).Msg("Graph throttled the unread counter")
		if err := c.http.wait(ctx, wait); err != nil {
			fail(next, func(q query) error {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("counting the unread messages of %s: %w: %w", q.what, err, q.last)
			})
			return
		}
		pending = next
	}
}

// settle reads the responses of a batch into counts and returns the
// throttled queries with the longest wait they asked for.
func (c *Counter) settle(batch *BatchResponse, pending []query, counts []sources.Count, attempt int) ([]query, time.Duration) {
	byID := make(map[string]*BatchItem, len(batch.Responses))
	for i := range batch.Responses {
		byID[batch.Responses[i].ID] = &batch.Responses[i]
	}
	var (
		next []query
		wait time.Duration
	)
	for _, q := range pending {
		it, ok := byID[q.id]
		switch {
		case !ok:
			counts[q.index].Err = fmt.Errorf("counting the unread messages of %s: %w: no response to request %s", q.what, ErrMalformedBatch, q.id)
		case it.Status == http.StatusOK:
			n, err := it.UnreadItemCount()
			if err != nil {
				err = fmt.Errorf("counting the unread messages of %s: %w", q.what, err)
			}
			counts[q.index] = sources.Count{Unread: n, Err: err}
		case it.Status == http.StatusNotFound:
			// No such user, or a user without an Exchange Online mailbox
			// (MailboxNotEnabledForRESTAPI).
			counts[q.index].Err = fmt.Errorf("%w: %w", sources.ErrNotServed, apiError(it.Status, it.Body))
		case isThrottle(it.Status):
			c.metrics.throttledBy(it.Status)
			q.last = apiError(it.Status, it.Body)
			wait = max(wait, c.http.waitFor(it.Header("Retry-After"), attempt))
			next = append(next, q)
		default:
			counts[q.index].Err = fmt.Errorf("counting the unread messages of %s: %w", q.what, apiError(it.Status, it.Body))
		}
	}
	return next, wait
}

// send posts the batch of pending.
func (c *Counter) send(ctx context.Context, pending []query) (httpAnswer, error) {
	batch := BatchRequest{Requests: make([]BatchRequestItem, len(pending))}
	for i, q := range pending {
		batch.Requests[i] = BatchRequestItem{ID: q.id, Method: http.MethodGet, URL: q.url}
	}
	body, err := json.Marshal(batch)
	if err != nil {
		return httpAnswer{}, fmt.Errorf("encoding a Graph batch: %w", err)
	}
	answer, err := c.http.do(ctx, http.MethodPost, c.batchURL, body, MaxBatchResponse, fmt.Sprintf("a Graph batch of %d requests", len(pending)))
	if errors.Is(err, errAnswerTooLong) {
		err = fmt.Errorf("%w: %w", ErrMalformedBatch, err)
	}
	return answer, err
}

// wellKnownFolder maps a mailbox name to a Graph well-known folder name:
// events.Inbox (and an empty name) to inbox, a well-known name (in any
// case) to itself. ok is false for any other name.
func wellKnownFolder(name string) (string, bool) {
	if name == "" || name == events.Inbox {
		return "inbox", true
	}
	switch lower := strings.ToLower(name); lower {
	case "archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts", "inbox", "junkemail",
		"localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions", "scheduled", "searchfolders",
		"sentitems", "serverfailures", "syncissues":
		return lower, true
	}
	return "", false
}
