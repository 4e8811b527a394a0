package graph

import (
	"errors"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/clip"
)

// FuzzBatch feeds arbitrary answers to DecodeBatch and reads every
// response as the counter does. Seeds: testdata/batch_mixed.json and the
// corpus in testdata/fuzz/FuzzBatch.
func FuzzBatch(f *testing.F) {
	f.Add(readFile(f, "batch_mixed.json"))
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := DecodeBatch(body)
		if err != nil {
			if b != nil || !errors.Is(err, ErrMalformedBatch) {
				t.Fatalf("got %+v with error %v", b, err)
			}
			return
		}
		if len(b.Responses) > MaxBatchRequests {
			t.Fatalf("%d responses", len(b.Responses))
		}
		seen := map[string]bool{}
		for i := range b.Responses {
			it := &b.Responses[i]
			if it.ID == "" || seen[it.ID] || it.Status < 100 || it.Status > 599 {
				t.Fatalf("response %+v", it)
			}
			seen[it.ID] = true
			if n, err := it.UnreadItemCount(); n < 0 || (err != nil && n != 0) {
				t.Fatalf("unreadItemCount %d, %v", n, err)
			}
			if d, ok := retryAfter(it.Header("Retry-After"), now); d < 0 || (!ok && d != 0) {
				t.Fatalf("Retry-After %q: %v", it.Header("Retry-After"), d)
			}
			if e := apiError(it.Status, it.Body); len(e.Code) > clip.MaxText+len("…") || len(e.Message) > clip.MaxText+len("…") {
				t.Fatalf("error text of %d and %d bytes", len(e.Code), len(e.Message))
			}
		}
	})
}
