package relayclient

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Class says what kind of failure an error is, in the terms of the
// connectivity probe (Authentication, Networking, PushNotifications,
// Unknown) plus two that matter to retries (Throttled, Server).
type Class string

// Failure classes.
const (
	// ClassAuthentication: no token could be had, or the relay refused it
	// (401, 403).
	ClassAuthentication Class = "Authentication"
	// ClassNetworking: the relay could not be reached or did not answer in
	// time (DNS, dial, TLS, connection refused or reset, timeout).
	ClassNetworking Class = "Networking"
	// ClassPushNotifications: the configuration is wrong: the service URI is
	// invalid or not found (404), or the relay refused the request as such
	// (400 and other 4xx, a fault with CanRetry false), or what answered is
	// not a relay.
	ClassPushNotifications Class = "PushNotifications"
	// ClassThrottled: the relay asked us to slow down (429).
	ClassThrottled Class = "Throttled"
	// ClassServer: the relay failed (5xx).
	ClassServer Class = "Server"
	// ClassUnknown: anything else.
	ClassUnknown Class = "Unknown"
)

// Sentinels matched by [*Error] with errors.Is.
var (
	// ErrUnauthorized matches an error of ClassAuthentication.
	ErrUnauthorized = errors.New("not authorized by the relay")
	// ErrUnreachable matches an error of ClassNetworking.
	ErrUnreachable = errors.New("relay unreachable")
	// ErrPermanent matches an error that retrying will not fix (see
	// [Error.Temporary]).
	ErrPermanent = errors.New("permanent relay failure")
	// ErrCircuitOpen is wrapped by the error of a publish refused without
	// being sent because the circuit breaker is open.
	ErrCircuitOpen = errors.New("circuit breaker open")
)

// Error is the failure of one publish request.
type Error struct {
	// Class is what kind of failure this is.
	Class Class
	// URI is the proxy Uri the request was for.
	URI string
	// Status is the HTTP status of the answer; 0 if there was none.
	Status int
	// Fault is the relay's fault body, if the answer had one. When the
	// relay's fault omits CanRetry, it is filled in from the status.
	Fault *relayproto.Fault
	// RetryAfter is how long the relay asked us to wait: the larger of
	// the fault's BackOffTimeInMilliseconds and the Retry-After header,
	// capped at relayproto.MaxBackOff. For an open circuit breaker it is the
	// time left until a trial request may go through.
	RetryAfter time.Duration
	// Challenge is the WWW-Authenticate header of a 401 answer.
	Challenge string
	// RequestID is the client-request-id the request was sent with.
	RequestID string
	// Err is the underlying cause, if any (a transport error, a token
	// error, a decoding error, ErrCircuitOpen).
	Err error
}

// Error describes the failure with the relay's own words and, for a 401,
// the challenge, which says what the relay expects.
func (e *Error) Error() string {
	return "publishing to " + e.URI + ": " + e.detail()
}

// detail is the error without the URI it was for.
func (e *Error) detail() string {
	var b strings.Builder
	sep := ""
	if e.Status != 0 {
		fmt.Fprintf(&b, "relay answered %d %s", e.Status, http.StatusText(e.Status))
		if e.Fault != nil && e.Fault.Message != "" {
			b.WriteString(": ")
			b.WriteString(e.Fault.Message)
		}
		if e.Challenge != "" {
			b.WriteString(" (WWW-Authenticate: ")
			b.WriteString(e.Challenge)
			b.WriteString(")")
		}
		sep = "; "
	}
	if e.Err != nil {
		b.WriteString(sep)
		b.WriteString(e.Err.Error())
	}
	if e.RequestID != "" {
		b.WriteString(" [client-request-id ")
		b.WriteString(e.RequestID)
		b.WriteString("]")
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches ErrUnauthorized (ClassAuthentication), ErrUnreachable
// (ClassNetworking) and ErrPermanent (not Temporary).
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Class == ClassAuthentication
	case ErrUnreachable:
		return e.Class == ClassNetworking
	case ErrPermanent:
		return !e.Temporary()
	}
	return false
}

// Temporary reports whether the same request may succeed later. A relay
// fault decides with its CanRetry; otherwise network failures, throttling,
// server errors and an open circuit breaker are temporary, and everything
// else is permanent.
func (e *Error) Temporary() bool {
	if e.Fault != nil {
		return e.Fault.CanRetry
	}
	if errors.Is(e.Err, ErrCircuitOpen) {
		return true
	}
	switch e.Class {
	case ClassNetworking, ClassThrottled, ClassServer:
		return true
	}
	return false
}

// classForStatus is the class of a non-2xx HTTP status.
func classForStatus(status int) Class {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ClassAuthentication
	case status == http.StatusTooManyRequests:
		return ClassThrottled
	case status == http.StatusRequestTimeout:
		return ClassNetworking
	case status >= 500:
		return ClassServer
	case status >= 300 && status < 500:
		return ClassPushNotifications
	}
	return ClassUnknown
}
