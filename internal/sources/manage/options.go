// Package manage is the machinery the subscription managers of the sources
// share (the Graph and the EWS Manager): each keeps one subscription per
// listed user of a mail system, in a records.Store across restarts. A Core
// runs the loop (load the store and the list, start the operations that
// are due, a few at a time, retry what failed after a backoff, read the
// list again now and then) and keeps the entries; the source's Policy
// says what a subscription needs next and how it is made, renewed or
// dropped.
package manage

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/service"
)

// Defaults of Options.
const (
	// DefaultRate is how many requests a second a manager sends: 10,000
	// users are subscribed in about 17 minutes.
	DefaultRate = 10
	// DefaultConcurrency bounds the operations in flight.
	DefaultConcurrency = 8
	// DefaultRequestTimeout bounds one request.
	DefaultRequestTimeout = time.Minute
	// DefaultErrorBackoff is the wait after a failed operation; it doubles
	// with each further failure up to DefaultMaxErrorBackoff.
	DefaultErrorBackoff    = time.Minute
	DefaultMaxErrorBackoff = time.Hour
	// ProgressInterval is how often a log line reports the progress of the
	// subscriptions being made.
	ProgressInterval = 10 * time.Second
	// clientTimeout bounds one request of the default client.
	clientTimeout = time.Minute
)

// Options are the settings every subscription manager has. A source's
// ManagerConfig embeds them.
type Options struct {
	// Client sends the requests; a client with a one-minute timeout when
	// nil. The source's Counter's may be shared.
	Client *http.Client
	// Rate is the most requests a second (DefaultRate when 0);
	// Concurrency the most operations in flight (DefaultConcurrency when
	// 0).
	Rate        float64
	Concurrency int
	// RequestTimeout bounds one request (DefaultRequestTimeout when 0). A
	// request in flight is finished even when Run's context ends, so that
	// a subscription made is never lost track of.
	RequestTimeout time.Duration
	// MaxAttempts, RetryWait and MaxRetryWait bound the retries of a
	// request the mail system asks to send again later (busy, throttled),
	// as for the source's Counter (its defaults when 0). While the mail
	// system asks to wait, every request of the manager waits.
	MaxAttempts  int
	RetryWait    time.Duration
	MaxRetryWait time.Duration
	// ErrorBackoff and MaxErrorBackoff space the attempts of an operation
	// that failed (DefaultErrorBackoff, DefaultMaxErrorBackoff when 0).
	ErrorBackoff    time.Duration
	MaxErrorBackoff time.Duration
	// Now, Sleep and After are the clock: time.Now, a timer and
	// time.After when nil. Tests replace them so that they never wait.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	After func(d time.Duration) <-chan time.Time
	// Log receives a line per operation that fails and the progress of
	// the subscriptions, and what the source adds.
	Log zerolog.Logger
	// Metrics, when set, receives the manager's metrics.
	Metrics prometheus.Registerer
}

// Retries are the source's defaults of Options.MaxAttempts, RetryWait and
// MaxRetryWait: its Counter's.
type Retries struct {
	MaxAttempts  int
	RetryWait    time.Duration
	MaxRetryWait time.Duration
}

// Defaults checks o and fills in what is not set; retries are the
// source's defaults of the retries.
func (o *Options) Defaults(retries Retries) error {
	if o.Rate == 0 {
		o.Rate = DefaultRate
	}
	if o.Rate < 0 {
		return fmt.Errorf("the rate %v is negative", o.Rate)
	}
	o.Concurrency = Positive(o.Concurrency, DefaultConcurrency)
	o.RequestTimeout = Positive(o.RequestTimeout, DefaultRequestTimeout)
	o.MaxAttempts = Positive(o.MaxAttempts, retries.MaxAttempts)
	o.RetryWait = Positive(o.RetryWait, retries.RetryWait)
	o.MaxRetryWait = Positive(o.MaxRetryWait, retries.MaxRetryWait)
	o.ErrorBackoff = Positive(o.ErrorBackoff, DefaultErrorBackoff)
	o.MaxErrorBackoff = Positive(o.MaxErrorBackoff, DefaultMaxErrorBackoff)
	if o.Client == nil {
		o.Client = &http.Client{Timeout: clientTimeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = service.Sleep
	}
	if o.After == nil {
		o.After = time.After
	}
	return nil
}

// Positive is v, or def when v is not positive.
func Positive[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
