package dispatcher

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestShortCatchUpReadIsMadeAgain checks the end of a catch-up read that
// stopped before its range's end: while the stream still holds the end (a
// replica behind the leader answered the read), the read fails and is made
// again; once the stream's limits removed it, the read is whole.
func TestShortCatchUpReadIsMadeAgain(t *testing.T) {
	d := onePartition(t)
	storeMail(t, d, 10) // sequences 1 to 10
	w := d.newWorker(0, 0)
	ctx := context.Background()
	tests := []struct {
		name      string
		purgeTo   uint64 // the stream keeps sequences from purgeTo on (0: all)
		next, to  uint64
		wantShort bool
	}{
		{"read to the end", 0, 9, 8, false},
		{"ended before the end the stream holds", 0, 5, 8, true},
		{"the rest of the range removed by the limits", 9, 5, 8, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.purgeTo > 0 {
				if err := d.streamHandle.Purge(ctx, jetstream.WithPurgeSequence(tt.purgeTo)); err != nil {
					t.Fatal(err)
				}
			}
			_, err := w.readEnded(ctx, nil, tt.next, tt.to)
			if short := errors.Is(err, errCatchUpShort); short != tt.wantShort || (err != nil && !short) {
				t.Fatalf("readEnded(%d, %d) = %v, want short=%v", tt.next, tt.to, err, tt.wantShort)
			}
		})
	}
}
