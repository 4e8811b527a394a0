package delivery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Publisher sends a batch once; *relayclient.Client implements it.
type Publisher interface {
	Publish(ctx context.Context, uri string, batch []relayproto.Notification) (relayproto.Response, error)
}

// breakerResetter is implemented by publishers with a breaker of their own
// (*relayclient.Client), which is reset when the relay's Uri changes.
type breakerResetter interface {
	ResetBreaker()
}

// URISource gives the relay's current Uri; it is read before every attempt.
type URISource func(ctx context.Context) (string, error)

// Defaults of Policy.
const (
	DefaultInitialInterval = 500 * time.Millisecond
	DefaultMaxInterval     = 30 * time.Second
	DefaultMaxElapsedTime  = 2 * time.Minute
)

// Policy is the retry policy of transient failures: jittered exponential
// back-off from InitialInterval, capped at MaxInterval, given up when the
// budget MaxElapsedTime is spent. Waiting on back-pressure is not counted
// in the budget. Zero fields take the defaults; MaxAttempts, when set,
// also bounds the attempts that failed transiently.
type Policy struct {
	InitialInterval time.Duration
	MaxInterval     time.Duration
	MaxElapsedTime  time.Duration
	MaxAttempts     int
	// ReturnOnBackPressure makes Publish return a back-pressure refusal at
	// once instead of waiting it out: the dispatcher holds the push and
	// sends the latest count later.
	ReturnOnBackPressure bool
}

func (p Policy) withDefaults() Policy {
	if p.InitialInterval <= 0 {
		p.InitialInterval = DefaultInitialInterval
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = DefaultMaxInterval
	}
	p.MaxInterval = max(p.MaxInterval, p.InitialInterval)
	if p.MaxElapsedTime <= 0 {
		p.MaxElapsedTime = DefaultMaxElapsedTime
	}
	return p
}

// budgetClock is the clock of the retry budget: real time minus the time
// spent waiting on back-pressure.
type budgetClock struct {
	mu     sync.Mutex
	paused time.Duration
}

// Now implements backoff.Clock.
func (c *budgetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(-c.paused)
}

func (c *budgetClock) pause(d time.Duration) {
	c.mu.Lock()
	c.paused += d
	c.mu.Unlock()
}

// Retrier runs attempts under a Policy, telling waits that count toward
// the budget from waits on back-pressure, which do not.
type Retrier struct {
	pol      Policy
	clock    *budgetClock
	exp      *backoff.ExponentialBackOff
	attempts int
	counted  int
}

// NewRetrier starts a retry budget.
func NewRetrier(p Policy) *Retrier {
	p = p.withDefaults()
	clock := &budgetClock{}
	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.InitialInterval),
		backoff.WithMaxInterval(p.MaxInterval),
		backoff.WithMaxElapsedTime(p.MaxElapsedTime),
		backoff.WithClockProvider(clock),
	)
	exp.Reset()
	return &Retrier{pol: p, clock: clock, exp: exp}
}

// Attempts is how many attempts were reported (Failed or Throttled).
func (r *Retrier) Attempts() int { return r.attempts }

// ErrBudgetSpent is wrapped by Failed's error when the retry budget is
// spent.
var ErrBudgetSpent = errors.New("retry budget spent")

// Failed records an attempt that failed transiently and returns how long
// to wait before the next one: the policy's back-off, or longer if the
// relay asked (hint; the excess over the policy's is back-pressure and is
// not counted). It fails with ErrBudgetSpent when the budget is spent.
func (r *Retrier) Failed(hint time.Duration) (time.Duration, error) {
	r.attempts++
	r.counted++
	wait := r.exp.NextBackOff()
	if wait == backoff.Stop || (r.pol.MaxAttempts > 0 && r.counted >= r.pol.MaxAttempts) {
		return 0, fmt.Errorf("%w after %s", ErrBudgetSpent, plural(r.counted, "failed attempt"))
	}
	if hint > wait {
		r.clock.pause(hint - wait)
		wait = hint
	}
	return wait, nil
}

// Throttled records an attempt refused by back-pressure (429, an open
// breaker) and returns how long to wait: the relay's hint, at least the
// policy's first interval. Nothing of it counts toward the budget.
func (r *Retrier) Throttled(hint time.Duration) time.Duration {
	r.attempts++
	wait := max(hint, r.pol.InitialInterval)
	r.clock.pause(wait)
	return wait
}

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// BackPressure reports whether a failed request was refused because the
// relay asked us to slow down or wait (429, a fault's back-off, an open
// breaker), and how long to wait.
func BackPressure(err error) (time.Duration, bool) {
	var e *relayclient.Error
	if !errors.As(err, &e) {
		return 0, false
	}
	switch {
	case errors.Is(err, relayclient.ErrCircuitOpen):
		return e.RetryAfter, true
	case e.Class == relayclient.ClassThrottled:
		return e.RetryAfter, true
	}
	return 0, false
}

// Publish sends batch to the relay at uris' current Uri, retrying under
// pol: transient failures use the budget, back-pressure does not. The Uri
// is read before each attempt; when it changed, pub's breaker is reset. It
// returns the answer, the attempts made and the Uri of the last attempt.
// notify, when set, is called before each wait.
func Publish(ctx context.Context, pub Publisher, uris URISource, batch []relayproto.Notification, pol Policy, notify func(attempt int, err error, wait time.Duration)) (relayproto.Response, int, error) {
	r := NewRetrier(pol)
	var last string
	for {
		uri, err := uris(ctx)
		if err != nil {
			return relayproto.Response{}, r.Attempts(), err
		}
		if last != "" && uri != last {
			if rb, ok := pub.(breakerResetter); ok {
				rb.ResetBreaker()
			}
		}
		last = uri
		resp, err := pub.Publish(ctx, uri, batch)
		if err == nil {
			return resp, r.Attempts() + 1, nil
		}
		if ctx.Err() != nil {
			return relayproto.Response{}, r.Attempts() + 1, err
		}
		var wait time.Duration
		if hint, ok := BackPressure(err); ok {
			if pol.ReturnOnBackPressure {
				return relayproto.Response{}, r.Attempts() + 1, err
			}
			wait = r.Throttled(hint)
		} else {
			if errors.Is(err, relayclient.ErrPermanent) {
				return relayproto.Response{}, r.Attempts() + 1, err
			}
			var hint time.Duration
			var e *relayclient.Error
			if errors.As(err, &e) {
				hint = e.RetryAfter
			}
			var spent error
			if wait, spent = r.Failed(hint); spent != nil {
				return relayproto.Response{}, r.Attempts(), fmt.Errorf("giving up: %w: %w", spent, err)
			}
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return relayproto.Response{}, r.Attempts(), fmt.Errorf("giving up after %s: the next in %s would start after the deadline: %w", plural(r.Attempts(), "attempt"), wait.Round(time.Millisecond), err)
		}
		if notify != nil {
			notify(r.Attempts(), err, wait)
		}
		if serr := Sleep(ctx, wait); serr != nil {
			return relayproto.Response{}, r.Attempts(), fmt.Errorf("%w after %s (last error: %w)", serr, plural(r.Attempts(), "attempt"), err)
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
