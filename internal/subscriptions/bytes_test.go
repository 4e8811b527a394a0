package subscriptions_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/storage"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// goalDeviceBytes is the most a subscription may take in the bucket
// (issue: a million users in bounded memory; make bench-scale reports it
// too).
const goalDeviceBytes = 300

// subscriptionBytes is what the bucket holds of n users' APNs devices
// written in enc, right after they subscribed (a create, which stores its
// revision check) and after each refreshed once (a plain write).
type subscriptionBytes struct {
	created, refreshed brokertest.BucketUsage
}

// bytesPerSubscription subscribes one APNs device for each of n users of
// a new server through Store.Put in enc, as ingest's API does, and
// measures the bucket; then refreshes each and measures it again.
func bytesPerSubscription(tb testing.TB, enc storage.Encoding, n int) subscriptionBytes {
	tb.Helper()
	conn := brokertest.Start(tb)
	ctx := context.Background()
	store, err := subscriptions.Open(ctx, conn.JS, brokertest.Keyer(tb, conn))
	if err != nil {
		tb.Fatal(err)
	}
	store = store.WithEncoding(storage.Fixed(enc)).WithLimits(subscriptions.Limits{})
	sub := func(i int) subscriptions.Subscription {
		token := sha256.Sum256([]byte(fmt.Sprint("device-", i)))
		return subscriptions.Subscription{Tenant: "fabrikam.com", User: fmt.Sprintf("user%d@fabrikam.com", i), AppID: "com.fabrikam.mail",
			DeviceID: hex.EncodeToString(token[:]), Platform: subscriptions.PlatformAPNS, Options: subscriptions.OptionEmail, Language: "en-GB"}
	}
	var out subscriptionBytes
	for _, into := range []*brokertest.BucketUsage{&out.created, &out.refreshed} {
		for i := range n {
			if _, _, err := store.Put(ctx, sub(i)); err != nil {
				tb.Fatal(err)
			}
		}
		*into = brokertest.Usage(tb, conn.JS, broker.BucketSubscriptions, n)
	}
	return out
}

// TestBytesPerSubscription: a compact subscription meets the goal, also
// as created through the API; JSON does not.
func TestBytesPerSubscription(t *testing.T) {
	const n = 300
	asJSON, packed := bytesPerSubscription(t, storage.JSON, n), bytesPerSubscription(t, storage.Compact, n)
	t.Logf("bytes per subscription: json %.0f created, %.0f refreshed; compact %.0f created, %.0f refreshed (goal ≤ %d)",
		asJSON.created.PerEntry(), asJSON.refreshed.PerEntry(), packed.created.PerEntry(), packed.refreshed.PerEntry(), goalDeviceBytes)
	if packed.created.PerEntry() > goalDeviceBytes || asJSON.refreshed.PerEntry() <= packed.created.PerEntry() {
		t.Fatalf("bytes per subscription: json %.0f, compact %.0f; want compact ≤ %d and below json",
			asJSON.refreshed.PerEntry(), packed.created.PerEntry(), goalDeviceBytes)
	}
}

// BenchmarkBytesPerSubscription reports the bytes per subscription of
// 10,000 users, one APNs device each, in each encoding, as created and
// as refreshed (go test -run '^$' -bench BytesPerSubscription -benchtime 1x).
func BenchmarkBytesPerSubscription(b *testing.B) {
	for _, enc := range []storage.Encoding{storage.JSON, storage.Compact} {
		b.Run(string(enc), func(b *testing.B) {
			var u subscriptionBytes
			for range b.N {
				u = bytesPerSubscription(b, enc, 10_000)
			}
			b.ReportMetric(u.created.PerEntry(), "B/created")
			b.ReportMetric(u.refreshed.PerEntry(), "B/refreshed")
		})
	}
}
