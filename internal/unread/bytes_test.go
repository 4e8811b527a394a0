package unread_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/storage"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// goalStateBytes is the most a user state may take in the bucket (issue:
// a million users in bounded memory; make bench-scale reports it too).
const goalStateBytes = 200

// bytesPerState writes n users' states into a new server in enc the way
// a dispatcher does (created when the user's first event is applied, then
// updated with its revision check after the push) and returns what the
// bucket holds.
func bytesPerState(tb testing.TB, enc storage.Encoding, n int) brokertest.BucketUsage {
	tb.Helper()
	conn := brokertest.Start(tb)
	ctx := context.Background()
	store, err := unread.Open(ctx, conn.JS)
	if err != nil {
		tb.Fatal(err)
	}
	store = store.WithEncoding(storage.Fixed(enc))
	keyer := brokertest.Keyer(tb, conn)
	now := time.Now()
	for i := range n {
		key := keyer.UserKey("fabrikam.com", fmt.Sprintf("user%d@fabrikam.com", i))
		seq := uint64(40_000_000 + 7*i)
		st := unread.State{Count: i % 40, Exact: true, LastSeq: seq, LastEventAt: now.Add(time.Duration(i) * time.Millisecond).UTC()}
		rev, err := store.Put(ctx, key, st, 0)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := store.Put(ctx, key, st.Pushed(st.Count, seq, now.Add(time.Duration(i)*time.Millisecond+1500*time.Millisecond)), rev); err != nil {
			tb.Fatal(err)
		}
	}
	return brokertest.Usage(tb, conn.JS, broker.BucketUnread, n)
}

// TestBytesPerState: a compact state meets the goal; JSON does not.
func TestBytesPerState(t *testing.T) {
	const n = 300
	asJSON, packed := bytesPerState(t, storage.JSON, n), bytesPerState(t, storage.Compact, n)
	t.Logf("bytes per user state: json %.0f, compact %.0f (goal ≤ %d)", asJSON.PerEntry(), packed.PerEntry(), goalStateBytes)
	if packed.PerEntry() > goalStateBytes || asJSON.PerEntry() <= packed.PerEntry() {
		t.Fatalf("bytes per user state: json %.0f, compact %.0f; want compact ≤ %d and below json", asJSON.PerEntry(), packed.PerEntry(), goalStateBytes)
	}
}

// BenchmarkBytesPerState reports the bytes per user state of 10,000 users
// in each encoding (go test -run '^$' -bench BytesPerState -benchtime 1x).
func BenchmarkBytesPerState(b *testing.B) {
	for _, enc := range []storage.Encoding{storage.JSON, storage.Compact} {
		b.Run(string(enc), func(b *testing.B) {
			var u brokertest.BucketUsage
			for range b.N {
				u = bytesPerState(b, enc, 10_000)
			}
			b.ReportMetric(u.PerEntry(), "B/user-state")
		})
	}
}
