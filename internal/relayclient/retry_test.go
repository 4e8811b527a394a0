package relayclient

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// notified is one call of PublishRetry's notify.
type notified struct {
	attempt int
	err     error
	wait    time.Duration
}

func TestPublishRetry(t *testing.T) {
	tests := []struct {
		name         string
		answer       answerFunc
		wantAttempts int
		wantErr      bool
		wantClass    Class
		// wantMinGap is a lower bound on the time between the first two
		// requests the relay saw: a relay's back-off hint honoured.
		wantMinGap time.Duration
	}{
		{
			name:         "503 then success",
			answer:       failThen(1, status(http.StatusServiceUnavailable)),
			wantAttempts: 2,
		},
		{
			name:         "502 twice then success",
			answer:       failThen(2, status(http.StatusBadGateway)),
			wantAttempts: 3,
		},
		{
			name:         "BackOffTimeInMilliseconds honoured",
			answer:       failThen(1, fault(http.StatusServiceUnavailable, relayproto.Fault{Message: "busy", CanRetry: true, BackOffTimeInMilliseconds: 200})),
			wantAttempts: 2,
			wantMinGap:   200 * time.Millisecond,
		},
		{
			name: "Retry-After honoured",
			answer: failThen(1, func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
			}),
			wantAttempts: 2,
			wantMinGap:   time.Second,
		},
		{
			name:         "CanRetry false stops at once",
			answer:       always(fault(http.StatusServiceUnavailable, relayproto.Fault{Message: "tenant blocked", CanRetry: false})),
			wantAttempts: 1,
			wantErr:      true,
			wantClass:    ClassServer,
		},
		{
			name: "401 stops at once",
			answer: always(func(w http.ResponseWriter) {
				w.Header().Set("WWW-Authenticate", `Bearer client_id="relay"`)
				w.WriteHeader(http.StatusUnauthorized)
			}),
			wantAttempts: 1,
			wantErr:      true,
			wantClass:    ClassAuthentication,
		},
		{
			name:         "400 stops at once",
			answer:       always(fault(http.StatusBadRequest, relayproto.Fault{Message: "bad"})),
			wantAttempts: 1,
			wantErr:      true,
			wantClass:    ClassPushNotifications,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			relay := newTestRelay(t, tt.answer)
			c := New(Config{Tokens: staticTokens{token: "t"}, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, MaxElapsedTime: time.Minute})
			var calls []notified
			resp, attempts, err := c.PublishRetry(t.Context(), relay.uri(), batchOf(2), func(attempt int, err error, wait time.Duration) {
				calls = append(calls, notified{attempt, err, wait})
			})
			if attempts != tt.wantAttempts {
				t.Errorf("attempts %d, want %d (%v)", attempts, tt.wantAttempts, err)
			}
			if got := len(relay.requests()); got != tt.wantAttempts {
				t.Errorf("relay saw %d requests, want %d", got, tt.wantAttempts)
			}
			if len(calls) != tt.wantAttempts-1 {
				t.Errorf("notify called %d times, want %d", len(calls), tt.wantAttempts-1)
			}
			for i, n := range calls {
				if n.attempt != i+1 || n.err == nil || n.wait <= 0 {
					t.Errorf("notify call %d: %+v", i, n)
				}
				if !temporary(n.err) {
					t.Errorf("notify with a permanent error %v", n.err)
				}
			}
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				if e := asError(t, err); e.Class != tt.wantClass || !errors.Is(err, ErrPermanent) {
					t.Errorf("class %s: %v", e.Class, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Results) != 2 || resp.Results[0].Devices[0].Status != relayproto.DeviceDelivered {
				t.Errorf("results %+v", resp.Results)
			}
			if tt.wantMinGap > 0 {
				reqs := relay.requests()
				if gap := reqs[1].at.Sub(reqs[0].at); gap < tt.wantMinGap {
					t.Errorf("retried after %s, relay asked for %s", gap, tt.wantMinGap)
				}
				if calls[0].wait < tt.wantMinGap {
					t.Errorf("notify wait %s, below the relay's %s", calls[0].wait, tt.wantMinGap)
				}
			}
		})
	}
}

func TestPublishRetryMaxElapsedTime(t *testing.T) {
	tests := []struct {
		name   string
		answer answerFunc
		// wantSingle: the relay's hint is past the bound, so no retry at all.
		wantSingle bool
	}{
		{"policy waits", always(status(http.StatusServiceUnavailable)), false},
		{"hint past the bound", always(fault(http.StatusServiceUnavailable, relayproto.Fault{Message: "down for maintenance", CanRetry: true, BackOffTimeInMilliseconds: int64(time.Hour / time.Millisecond)})), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			relay := newTestRelay(t, tt.answer)
			const maxElapsed = time.Second
			c := New(Config{Tokens: staticTokens{token: "t"}, InitialInterval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond,
				MaxElapsedTime: maxElapsed, BreakerFailures: -1})
			start := time.Now()
			_, attempts, err := c.PublishRetry(t.Context(), relay.uri(), batchOf(1), nil)
			took := time.Since(start)
			if err == nil {
				t.Fatal("no error")
			}
			if e := asError(t, err); e.Class != ClassServer {
				t.Errorf("class %s: %v", e.Class, err)
			}
			if attempts != len(relay.requests()) {
				t.Errorf("attempts %d, relay saw %d", attempts, len(relay.requests()))
			}
			if tt.wantSingle && attempts != 1 {
				t.Errorf("%d attempts, want 1: the hint is past the bound", attempts)
			}
			if !tt.wantSingle && attempts < 2 {
				t.Errorf("%d attempts, want retries within %s", attempts, maxElapsed)
			}
			// Only a sanity bound: the loop ended, long before the hour the
			// relay asked for.
			if took > 30*time.Second {
				t.Errorf("gave up after %s", took)
			}
		})
	}
}

func TestPublishRetryContextCancelStops(t *testing.T) {
	relay := newTestRelay(t, always(status(http.StatusServiceUnavailable)))
	c := New(Config{Tokens: staticTokens{token: "t"}, InitialInterval: time.Minute, MaxElapsedTime: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	var (
		attempts int
		err      error
	)
	go func() {
		defer close(done)
		_, attempts, err = c.PublishRetry(ctx, relay.uri(), batchOf(1), func(int, error, time.Duration) { cancel() })
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("PublishRetry did not stop when the context was cancelled")
	}
	if attempts != 1 || len(relay.requests()) != 1 {
		t.Errorf("attempts %d, relay saw %d", attempts, len(relay.requests()))
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v does not match context.Canceled", err)
	}
	if e := asError(t, err); e.Class != ClassServer {
		t.Errorf("last error class %s", e.Class)
	}
}

func TestPublishRetryStopsBeforeContextDeadline(t *testing.T) {
	relay := newTestRelay(t, always(fault(http.StatusServiceUnavailable, relayproto.Fault{CanRetry: true, BackOffTimeInMilliseconds: 60000})))
	c := New(Config{Tokens: staticTokens{token: "t"}, MaxElapsedTime: -1})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, attempts, err := c.PublishRetry(ctx, relay.uri(), batchOf(1), nil)
	if err == nil || attempts != 1 {
		t.Fatalf("attempts %d err %v", attempts, err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("waited %s for a retry past the deadline", took)
	}
	if ctx.Err() != nil {
		t.Error("returned only after the deadline")
	}
}
