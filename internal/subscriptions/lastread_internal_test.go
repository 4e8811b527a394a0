package subscriptions

import (
	"encoding/json"
	"errors"
	"iter"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// TestLastEntriesReadsTheAnswer reads answers of a batched read as the
// client library hands them over. The server answers "no results" only
// when nothing matched; "not found" after entries means it found an entry
// it could not load (a storage fault), which the library reports as the
// same ErrNoMessages. A real server cannot be made to answer so without
// damaging its store, hence the answers written here.
func TestLastEntriesReadsTheAnswer(t *testing.T) {
	const prefix = "$KV.subscriptions."
	val, err := json.Marshal(Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "app", DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	entry := func(key, pending string) *jetstream.RawStreamMsg {
		return &jetstream.RawStreamMsg{Subject: prefix + key, Sequence: 7, Data: val, Time: time.Now(), Header: nats.Header{numPendingHeader: []string{pending}}}
	}
	type answer struct {
		msg *jetstream.RawStreamMsg
		err error
	}
	tests := []struct {
		name        string
		answer      []answer
		wantEntries int
		wantPending string
		wantErr     error
	}{
		{"no results", []answer{{nil, jetstreamext.ErrNoMessages}}, 0, "0", nil},
		{"whole", []answer{{entry("u1.d1", "1"), nil}, {entry("u2.d1", "0"), nil}}, 2, "0", nil},
		{"cut short", []answer{{entry("u1.d1", "1"), nil}}, 1, "1", nil},
		{"no answer", nil, 0, "", nil},
		{"not found after an entry", []answer{{entry("u1.d1", "1"), nil}, {nil, jetstreamext.ErrNoMessages}}, 0, "", errLoadFailed},
		{"outside the bucket", []answer{{&jetstream.RawStreamMsg{Subject: "$KV.other.u1.d1"}, nil}}, 0, "", jetstreamext.ErrInvalidResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var msgs iter.Seq2[*jetstream.RawStreamMsg, error] = func(yield func(*jetstream.RawStreamMsg, error) bool) {
				for _, a := range tt.answer {
					if !yield(a.msg, a.err) {
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
				if e.err != nil || e.sub.DeviceID != "d1" {
					t.Fatalf("entry %+v", e)
				}
			}
		})
	}
}
