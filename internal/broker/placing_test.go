package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestWhilePlacing: Provision tries a stream or bucket again while a
// cluster that has just started has no peers to place it on, and stops at
// once on any other error.
func TestWhilePlacing(t *testing.T) {
	noPeers := fmt.Errorf("creating: %w", &jetstream.APIError{Code: 400, ErrorCode: errCodeClusterNoPeers,
		Description: "no suitable peers for placement, peer offline"})
	other := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeBadRequest, Description: "bad request"}
	tests := []struct {
		name string
		// answers are what the attempts return, in order; the last one
		// repeats.
		answers   []error
		wantCalls int
		wantErr   error
	}{
		{"placed at once", []error{nil}, 1, nil},
		{"placed once the peers report", []error{noPeers, noPeers, nil}, 3, nil},
		{"another error ends it", []error{other}, 1, other},
		{"another error after waiting", []error{noPeers, other}, 2, other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := whilePlacing(context.Background(), func() error {
				calls++
				return tt.answers[min(calls, len(tt.answers))-1]
			})
			if calls != tt.wantCalls {
				t.Errorf("%d attempts, want %d", calls, tt.wantCalls)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestWhilePlacingEndsWithItsContext: a cluster that never places the
// stream ends the wait with the caller's context, not after placementWait.
func TestWhilePlacingEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := whilePlacing(ctx, func() error {
		calls++
		if calls == 2 {
			cancel()
		}
		return &jetstream.APIError{Code: 400, ErrorCode: errCodeClusterNoPeers}
	})
	if err == nil || calls != 2 {
		t.Fatalf("error %v after %d attempts, want the no-peers error after 2", err, calls)
	}
}
