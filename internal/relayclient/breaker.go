package relayclient

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// BreakerState is the state of a client's circuit breaker. Its numeric
// value (closed 0, open 1, half-open 2) suits a gauge.
type BreakerState int

// Circuit breaker states.
const (
	// BreakerClosed: requests go through.
	BreakerClosed BreakerState = iota
	// BreakerOpen: requests fail fast with ErrCircuitOpen until the
	// cool-down ends.
	BreakerOpen
	// BreakerHalfOpen: the cool-down has ended; one trial request goes
	// through and decides whether the breaker closes or opens again.
	BreakerHalfOpen
)

// String is "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// outcome is what a request tells the breaker.
type outcome int

const (
	// outcomeAlive: the relay answered, successfully or with a permanent
	// refusal; either way it is up.
	outcomeAlive outcome = iota
	// outcomeFailed: a temporary failure (network, 429, 5xx, retryable
	// fault).
	outcomeFailed
	// outcomeNeutral: the request says nothing about the relay (the caller
	// gave up, no token).
	outcomeNeutral
)

// breaker is a consecutive-failure circuit breaker with a growing
// cool-down. It is safe for concurrent use.
type breaker struct {
	threshold   int
	cooldown    time.Duration
	maxCooldown time.Duration
	now         func() time.Time

	mu        sync.Mutex
	open      bool      // open or half-open
	openUntil time.Time // while open: when a trial may go through
	trial     bool      // a trial request is in flight
	failures  int       // consecutive temporary failures while closed
	opens     int       // consecutive opens without a success between
	last      string    // the failure that opened the breaker
	lastClass Class     // its class
}

// state is the breaker's state at now; mu must be held.
func (b *breaker) state(now time.Time) BreakerState {
	switch {
	case !b.open:
		return BreakerClosed
	case now.Before(b.openUntil):
		return BreakerOpen
	default:
		return BreakerHalfOpen
	}
}

// State is the breaker's current state.
func (b *breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state(b.now())
}

// OpenUntil is when an open breaker lets a trial through; the zero time
// when it is not open.
func (b *breaker) OpenUntil() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state(b.now()) != BreakerOpen {
		return time.Time{}
	}
	return b.openUntil
}

// Ready reports whether a request made now would be let through.
func (b *breaker) Ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state(b.now()) {
	case BreakerClosed:
		return true
	case BreakerHalfOpen:
		return !b.trial
	}
	return false
}

// allow lets a request through or refuses it with an *Error wrapping
// ErrCircuitOpen. trial reports whether the request is the half-open trial;
// it must be passed back to done.
func (b *breaker) allow(uri string) (trial bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	switch b.state(now) {
	case BreakerClosed:
		return false, nil
	case BreakerHalfOpen:
		if !b.trial {
			b.trial = true
			return true, nil
		}
		return false, &Error{Class: b.lastClass, URI: uri,
			Err: fmt.Errorf("%w: a trial request is in flight (opened after: %s)", ErrCircuitOpen, b.last)}
	}
	return false, &Error{Class: b.lastClass, URI: uri, RetryAfter: b.openUntil.Sub(now),
		Err: fmt.Errorf("%w until %s (opened after: %s)", ErrCircuitOpen, b.openUntil.UTC().Format(time.RFC3339), b.last)}
}

// reset closes the breaker and forgets its failures.
func (b *breaker) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open, b.trial, b.failures, b.opens = false, false, 0, 0
	b.openUntil = time.Time{}
}

// done records the outcome of a request that allow let through. hint is
// the relay's own back-off request; an opening lasts at least that long.
func (b *breaker) done(trial bool, o outcome, err error, hint time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch o {
	case outcomeAlive:
		b.open, b.trial, b.failures, b.opens = false, false, 0, 0
	case outcomeNeutral:
		if trial {
			b.trial = false
		}
	case outcomeFailed:
		switch {
		case trial:
			b.trial = false
			b.trip(err, hint)
		case !b.open:
			b.failures++
			if b.failures >= b.threshold {
				b.trip(err, hint)
			}
		}
	}
}

// trip opens the breaker for the next cool-down: cooldown doubled for each
// opening since the last success, capped at maxCooldown, and at least hint.
// mu must be held.
func (b *breaker) trip(err error, hint time.Duration) {
	wait := b.cooldown
	for i := 0; i < b.opens && wait < b.maxCooldown; i++ {
		wait *= 2
	}
	wait = min(wait, b.maxCooldown)
	wait = max(wait, hint)
	b.open = true
	b.openUntil = b.now().Add(wait)
	b.opens++
	b.failures = 0
	b.last, b.lastClass = err.Error(), ClassUnknown
	var e *Error
	if errors.As(err, &e) {
		b.last, b.lastClass = e.detail(), e.Class
	}
}
