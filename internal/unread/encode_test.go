package unread

import (
	"encoding/json"
	"testing"
	"time"
)

// TestAppendJSONMatchesMarshal checks that the state's hand-written
// encoding is byte for byte what encoding/json writes.
func TestAppendJSONMatchesMarshal(t *testing.T) {
	n, zero, neg := 7, 0, -3
	at := time.Date(2026, 2, 3, 4, 5, 6, 789000000, time.UTC)
	tests := []struct {
		name string
		s    State
	}{
		{"zero", State{}},
		{"counts only", State{Count: 12, Exact: true}},
		{"negative count", State{Count: -1}},
		{"everything", State{Count: 3, Exact: true, LastSeq: 1 << 60, LastEventAt: at, LastPushedCount: &n, LastPushedAt: at.Add(time.Second), LastPushedSeq: 99}},
		{"pushed zero", State{LastPushedCount: &zero}},
		{"pushed negative", State{LastPushedCount: &neg}},
		{"whole seconds", State{LastEventAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"zone offset", State{LastPushedAt: time.Date(2026, 1, 1, 12, 30, 0, 1, time.FixedZone("", 5*3600+1800))}},
		{"local time with monotonic reading", State{LastEventAt: time.Now(), LastPushedAt: time.Now()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := json.Marshal(tt.s)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tt.s.appendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("appendJSON\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestAppendJSONRefusesWhatMarshalRefuses: a time encoding/json cannot
// write is an error here too.
func TestAppendJSONRefusesWhatMarshalRefuses(t *testing.T) {
	s := State{LastPushedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := json.Marshal(s); err == nil {
		t.Fatal("json.Marshal accepted a year past 9999")
	}
	if _, err := s.appendJSON(nil); err == nil {
		t.Fatal("appendJSON accepted a year past 9999")
	}
}
