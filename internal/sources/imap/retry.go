package imap

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Why a watched user's connection ended, the reason label of
// pushproxy_imap_reconnects_total.
const (
	// reasonBye: the server said BYE (shutting down, idle too long).
	reasonBye = "bye"
	// reasonDropped: the connection broke or was closed without a BYE.
	reasonDropped = "dropped"
	// reasonTimeout: the server did not answer in time.
	reasonTimeout = "timeout"
	// reasonLogin: the server refused the user's login.
	reasonLogin = "login"
	// reasonError: the server refused a command or broke the protocol.
	reasonError = "error"
)

// reconnectReasons lists the reasons, for the metric's label values.
func reconnectReasons() []string {
	return []string{reasonBye, reasonDropped, reasonTimeout, reasonLogin, reasonError}
}

// errProtocol marks answers the watcher cannot read.
var errProtocol = errors.New("unexpected answer from the IMAP server")

// reconnectReason classifies the error that ended a session; sawBye tells
// that the server said BYE before it.
func reconnectReason(err error, sawBye bool) string {
	var le *loginError
	var ae *answerError
	var ne net.Error
	switch {
	case errors.As(err, &le):
		return reasonLogin
	case sawBye:
		return reasonBye
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return reasonTimeout
	case errors.As(err, &ae), errors.Is(err, errProtocol):
		return reasonError
	}
	return reasonDropped
}

// retry is a randomised exponential back-off: the first wait is min ± 50
// %, each next one up to 1.5 times longer, never more than max. It is not
// safe for concurrent use.
type retry struct {
	exp *backoff.ExponentialBackOff
	max time.Duration
}

func newRetry(min, max time.Duration) *retry {
	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min),
		backoff.WithMaxInterval(max),
		backoff.WithMaxElapsedTime(0),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMultiplier(1.5),
	)
	return &retry{exp: exp, max: max}
}

// next is the wait before the next attempt.
func (r *retry) next() time.Duration {
	return min(r.exp.NextBackOff(), r.max)
}

// reset starts the back-off over, after a success.
func (r *retry) reset() { r.exp.Reset() }
