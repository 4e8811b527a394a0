package imap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// timeoutError is a net.Error that timed out.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

func TestReconnectReason(t *testing.T) {
	refused := &loginError{err: statusError(&goimap.StatusResp{Type: goimap.StatusRespNo, Code: "AUTHENTICATIONFAILED", Info: "no"})}
	cases := []struct {
		name   string
		err    error
		bye    bool
		reason string
	}{
		{"login refused", fmt.Errorf("logging in: %w", refused), false, reasonLogin},
		{"unknown user", fmt.Errorf("logging in: %w", &loginError{err: sources.ErrNotServed}), false, reasonLogin},
		{"login refused with a BYE", refused, true, reasonLogin},
		{"BYE", errors.New("imap: connection closed"), true, reasonBye},
		{"closed", errors.New("imap: connection closed"), false, reasonDropped},
		{"EOF", fmt.Errorf("reading the greeting: %w", io.EOF), false, reasonDropped},
		{"deadline", fmt.Errorf("idling: %w", os.ErrDeadlineExceeded), false, reasonTimeout},
		{"setup timeout", fmt.Errorf("connecting: %w", context.DeadlineExceeded), false, reasonTimeout},
		{"net timeout", timeoutError{}, false, reasonTimeout},
		{"refused command", fmt.Errorf("opening INBOX read-only: %w", statusError(&goimap.StatusResp{Type: goimap.StatusRespNo, Info: "no"})), false, reasonError},
		{"unreadable answer", fmt.Errorf("counting: %w", errProtocol), false, reasonError},
	}
	for _, tc := range cases {
		if got := reconnectReason(tc.err, tc.bye); got != tc.reason {
			t.Errorf("%s: reason %s, want %s", tc.name, got, tc.reason)
		}
	}
}

func TestRetry(t *testing.T) {
	cases := []struct {
		min, max time.Duration
	}{
		{time.Second, 2 * time.Minute},
		{30 * time.Second, 10 * time.Minute},
		{time.Millisecond, time.Millisecond},
	}
	for _, tc := range cases {
		r := newRetry(tc.min, tc.max)
		for attempt := range 30 {
			d := r.next()
			if d < tc.min/2 || d > tc.max {
				t.Errorf("retry %v..%v attempt %d waits %v", tc.min, tc.max, attempt, d)
			}
		}
		r.reset()
		if d := r.next(); d > tc.min*3/2 {
			t.Errorf("retry %v..%v waits %v after a reset", tc.min, tc.max, d)
		}
	}
}
