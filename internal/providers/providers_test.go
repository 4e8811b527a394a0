package providers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

func TestErrorClassification(t *testing.T) {
	base := errors.New("connection reset")
	tests := []struct {
		name      string
		err       error
		gone      bool
		retryable bool
		after     time.Duration
		text      string
	}{
		{"nil", nil, false, false, 0, ""},
		{"plain error", base, false, false, 0, "connection reset"},
		{"gone", &providers.Error{Provider: "apns", Status: 410, Reason: "Unregistered", Gone: true},
			true, false, 0, "apns: 410 Unregistered (device gone)"},
		{"retryable with delay", &providers.Error{Provider: "fcm", Status: 429, Reason: "QUOTA_EXCEEDED", Retryable: true, RetryAfter: time.Minute},
			false, true, time.Minute, "fcm: 429 QUOTA_EXCEEDED (retry after 1m0s)"},
		{"retryable network", &providers.Error{Provider: "webpush", Retryable: true, Err: base},
			false, true, 0, "webpush: connection reset (retryable)"},
		{"permanent", &providers.Error{Provider: "fcm", Status: 400, Reason: "INVALID_ARGUMENT"},
			false, false, 0, "fcm: 400 INVALID_ARGUMENT"},
		{"delay on a permanent error is ignored", &providers.Error{Provider: "fcm", Status: 400, RetryAfter: time.Second},
			false, false, 0, "fcm: 400"},
		{"wrapped", fmt.Errorf("relay: %w", &providers.Error{Provider: "apns", Status: 503, Retryable: true, RetryAfter: 5 * time.Second}),
			false, true, 5 * time.Second, "relay: apns: 503 (retry after 5s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := providers.IsGone(tt.err); got != tt.gone {
				t.Errorf("IsGone = %v", got)
			}
			if got := errors.Is(tt.err, providers.ErrDeviceGone); got != tt.gone {
				t.Errorf("errors.Is(ErrDeviceGone) = %v", got)
			}
			if got := providers.IsRetryable(tt.err); got != tt.retryable {
				t.Errorf("IsRetryable = %v", got)
			}
			if got := errors.Is(tt.err, providers.ErrRetryable); got != tt.retryable {
				t.Errorf("errors.Is(ErrRetryable) = %v", got)
			}
			after, ok := providers.RetryAfter(tt.err)
			if after != tt.after || ok != (tt.after > 0) {
				t.Errorf("RetryAfter = %v, %v", after, ok)
			}
			if tt.err != nil && tt.err.Error() != tt.text {
				t.Errorf("Error() = %q, want %q", tt.err.Error(), tt.text)
			}
		})
	}
}

func TestErrorUnwrap(t *testing.T) {
	err := &providers.Error{Provider: "fcm", Retryable: true, Err: fmt.Errorf("posting: %w", context.DeadlineExceeded)}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("underlying error not reachable with errors.Is")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		{"", 0, false},
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"99999999999", 0, false},
		{"Sat, 01 Mar 2025 12:01:30 GMT", 90 * time.Second, true},
		{"Saturday, 01-Mar-25 12:00:10 GMT", 10 * time.Second, true}, // RFC 850
		{"Sat Mar  1 12:00:05 2025", 5 * time.Second, true},          // asctime
		{"Sat, 01 Mar 2025 11:00:00 GMT", 0, true},                   // in the past
	}
	for _, tt := range tests {
		got, ok := providers.ParseRetryAfter(tt.value, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v, want %v, %v", tt.value, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "Sat, 01 Mar 2025 12:01:30 GMT", "Sun Nov  6 08:49:37 1994", "-1"} {
		f.Add(s)
	}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, value string) {
		d, ok := providers.ParseRetryAfter(value, now)
		if d < 0 || !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v, %v", value, d, ok)
		}
	})
}

// TestBadgeRef checks that the relay names a device as the on-premises
// parts do: one reference follows a device end to end.
func TestBadgeRef(t *testing.T) {
	a := providers.Badge{AppID: "app", Device: "device-a"}
	b := providers.Badge{AppID: "app", Device: "device-b"}
	if a.Ref() == b.Ref() || a.Ref() != relayproto.DeviceRef("app", "device-a") || !strings.HasPrefix(a.Ref(), "app/") || len(a.Ref()) != len("app/")+10 {
		t.Errorf("Ref: %q %q", a.Ref(), b.Ref())
	}
}
