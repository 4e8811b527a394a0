package subscriptions

import (
	"encoding/json"
	"errors"
	"iter"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestLastEntriesReadsTheAnswer reads answers of a batched read as the
// client library hands over the server's messages. The server answers
// "404 No Results" only when nothing matched, and "404 Message Not Found"
// when it found an entry it could not load (a storage fault), before or
// after other entries. A real server cannot be made to answer so without
// damaging its store, hence the answers written here; the reads of real
// answers are exercised on real JetStream by the store's other tests.
func TestLastEntriesReadsTheAnswer(t *testing.T) {
	const prefix = "$KV.subscriptions."
	val, err := json.Marshal(Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "app", DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC).Format(time.RFC3339Nano)
	entry := func(key, pending string) *nats.Msg {
		return &nats.Msg{Data: val, Header: nats.Header{
			jetstream.StreamHeader: {"KV_subscriptions"}, jetstream.SubjectHeader: {prefix + key},
			jetstream.SequenceHeader: {"7"}, jetstream.TimeStampHeaer: {at}, numPendingHeader: {pending},
		}}
	}
	with := func(m *nats.Msg, header, value string) *nats.Msg {
		m.Header.Set(header, value)
		return m
	}
	status := func(code, description string) *nats.Msg {
		return &nats.Msg{Header: nats.Header{statusHeader: {code}, descriptionHeader: {description}}}
	}
	tests := []struct {
		name        string
		answer      []*nats.Msg
		wantEntries int
		wantPending string
		wantErr     error
	}{
		{"no results", []*nats.Msg{status("404", "No Results")}, 0, "0", nil},
		{"whole", []*nats.Msg{entry("u1.d1", "1"), entry("u2.d1", "0")}, 2, "0", nil},
		{"cut short", []*nats.Msg{entry("u1.d1", "1")}, 1, "1", nil},
		{"no answer", nil, 0, "", nil},
		{"first entry not loaded", []*nats.Msg{status("404", "Message Not Found")}, 0, "", errLoadFailed},
		{"not loaded after an entry", []*nats.Msg{entry("u1.d1", "1"), status("404", "Message Not Found")}, 0, "", errLoadFailed},
		{"no results after an entry", []*nats.Msg{entry("u1.d1", "1"), status("404", "No Results")}, 0, "", errLoadFailed},
		{"too many", []*nats.Msg{status("413", "Too Many Results")}, 0, "", errBatchRefused},
		{"server error before any entry", []*nats.Msg{status("500", "some store error")}, 0, "", errBatchRefused},
		{"server without batches", []*nats.Msg{with(entry("u1.d1", "0"), numPendingHeader, "")}, 0, "", errBatchRefused},
		{"status after an entry", []*nats.Msg{entry("u1.d1", "1"), status("408", "Request Timeout")}, 0, "", errInvalidAnswer},
		{"outside the bucket", []*nats.Msg{with(entry("u1.d1", "0"), jetstream.SubjectHeader, "$KV.other.u1.d1")}, 0, "", errInvalidAnswer},
		{"bad sequence", []*nats.Msg{with(entry("u1.d1", "0"), jetstream.SequenceHeader, "seven")}, 0, "", errInvalidAnswer},
		{"bad time", []*nats.Msg{with(entry("u1.d1", "0"), jetstream.TimeStampHeaer, "yesterday")}, 0, "", errInvalidAnswer},
		{"connection lost", []*nats.Msg{nil}, 0, "", nats.ErrConnectionClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var msgs iter.Seq2[*nats.Msg, error] = func(yield func(*nats.Msg, error) bool) {
				for _, m := range tt.answer {
					var err error
					if m == nil {
						err = nats.ErrConnectionClosed
					}
					if !yield(m, err) {
						return
					}
				}
			}
			s := &Store{now: time.Now}
			got, pending, err := s.lastEntries(msgs, prefix)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if len(got) != tt.wantEntries || pending != tt.wantPending {
				t.Fatalf("%d entries, pending %q; want %d, %q", len(got), pending, tt.wantEntries, tt.wantPending)
			}
			for _, e := range got {
				if e.err != nil || e.sub.DeviceID != "d1" || e.rev != 7 || e.user != "u1" && e.user != "u2" {
					t.Fatalf("entry %+v", e)
				}
			}
		})
	}
}
