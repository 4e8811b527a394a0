package brokertest

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketUsage is what a KV bucket's stream holds, as the server counts
// it: its entries, and their bytes with the subject, the stored headers
// and the file store's framing of each.
type BucketUsage struct {
	Entries, Bytes uint64
}

// PerEntry is the bytes an entry takes on average (0 without entries).
func (u BucketUsage) PerEntry() float64 {
	if u.Entries == 0 {
		return 0
	}
	return float64(u.Bytes) / float64(u.Entries)
}

// ReadBucketUsage reads the entries and bytes of bucket's stream.
func ReadBucketUsage(ctx context.Context, js jetstream.JetStream, bucket string) (BucketUsage, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return BucketUsage{}, fmt.Errorf("opening bucket %s: %w", bucket, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return BucketUsage{}, fmt.Errorf("reading bucket %s: %w", bucket, err)
	}
	return BucketUsage{Entries: info.State.Msgs, Bytes: info.State.Bytes}, nil
}

// Usage reads bucket's usage as ReadBucketUsage does and fails tb when it
// cannot, or when the bucket does not hold entries entries.
func Usage(tb testing.TB, js jetstream.JetStream, bucket string, entries int) BucketUsage {
	tb.Helper()
	u, err := ReadBucketUsage(context.Background(), js, bucket)
	if err != nil {
		tb.Fatal(err)
	}
	if u.Entries != uint64(entries) {
		tb.Fatalf("bucket %s holds %d entries, want %d", bucket, u.Entries, entries)
	}
	return u
}

// FirstByte is the first byte of the value stored under key in kv: '{'
// for JSON, compact.Version1 for a compact value.
func FirstByte(tb testing.TB, kv jetstream.KeyValue, key string) byte {
	tb.Helper()
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		tb.Fatal(err)
	}
	if len(e.Value()) == 0 {
		tb.Fatalf("the value of %s is empty", key)
	}
	return e.Value()[0]
}

// KV opens bucket or fails tb.
func KV(tb testing.TB, js jetstream.JetStream, bucket string) jetstream.KeyValue {
	tb.Helper()
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		tb.Fatal(err)
	}
	return kv
}
