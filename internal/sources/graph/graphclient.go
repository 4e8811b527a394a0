package graph

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// graphClient sends requests to the Graph API with app-only tokens and
// knows how long Graph's throttling answers ask to wait. The Counter and
// the Manager share it, each with its own retry loop around it.
type graphClient struct {
	tokens TokenSource
	client *http.Client
	// retryWait and maxRetryWait bound the waits of throttled requests;
	// the callers count the attempts.
	retryWait    time.Duration
	maxRetryWait time.Duration
	sleep        func(ctx context.Context, d time.Duration) error
	now          func() time.Time
}

// httpAnswer is Graph's answer to one HTTP request.
type httpAnswer struct {
	status int
	header http.Header
	body   []byte
	// token is the access token the request carried.
	token string
}

// errAnswerTooLong matches the error of an answer longer than its limit.
var errAnswerTooLong = errors.New("the answer from Graph is too long")

// do sends one request with a fresh (or cached) token: body, when not
// nil, as JSON. what names the request in errors; the answer's body is
// read up to limit bytes, a longer one is an error.
func (g *graphClient) do(ctx context.Context, method, url string, body []byte, limit int, what string) (httpAnswer, error) {
	token, err := g.tokens.Token(ctx)
	if err != nil {
		return httpAnswer{}, fmt.Errorf("getting a Graph token: %w", err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return httpAnswer{}, fmt.Errorf("making %s: %w", what, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		return httpAnswer{}, fmt.Errorf("sending %s: %w", what, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return httpAnswer{}, fmt.Errorf("reading Graph's answer to %s: %w", what, err)
	}
	if len(data) > limit {
		return httpAnswer{}, fmt.Errorf("reading Graph's answer to %s: %w: longer than %d bytes", what, errAnswerTooLong, limit)
	}
	return httpAnswer{status: resp.StatusCode, header: resp.Header, body: data, token: token}, nil
}

// waitFor is the wait before the next attempt: Retry-After when Graph
// gave it, otherwise retryWait doubled for each attempt so far.
func (g *graphClient) waitFor(retryAfterValue string, attempt int) time.Duration {
	if d, ok := retryAfter(retryAfterValue, g.now()); ok {
		return d
	}
	d := g.retryWait
	for i := 1; i < attempt && d < g.maxRetryWait; i++ {
		d *= 2
	}
	return min(d, g.maxRetryWait)
}

// wait sleeps d unless it is longer than maxRetryWait or than ctx has
// left, in which case it gives up at once.
func (g *graphClient) wait(ctx context.Context, d time.Duration) error {
	if d > g.maxRetryWait {
		return fmt.Errorf("%w: Graph asks to wait %s (at most %s)", ErrThrottled, d, g.maxRetryWait)
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
		return fmt.Errorf("%w: Graph asks to wait %s, past the deadline", ErrThrottled, d)
	}
	return g.sleep(ctx, d)
}

// canForget reports whether the token source can drop a refused token.
func (g *graphClient) canForget() bool { return sources.CanForget(g.tokens) }

// forget drops a token Graph refused, when the source can.
func (g *graphClient) forget(token string) { sources.Forget(g.tokens, token) }

// isThrottle reports whether an answer with status asks to come back
// later.
func isThrottle(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}
