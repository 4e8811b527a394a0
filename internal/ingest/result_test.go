package ingest

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pushproxy/pushproxy/internal/httpjson"
)

// TestWriteResultMatchesWriteJSON checks that the hand-written answer is
// byte for byte what httpjson.Write writes.
func TestWriteResultMatchesWriteJSON(t *testing.T) {
	tests := []struct {
		name string
		res  Result
	}{
		{"none", Result{Events: []Outcome{}}},
		{"nil events", Result{}},
		{"stored and duplicate", Result{Stored: 2, Duplicates: 1, Events: []Outcome{
			{Index: 0, Outcome: OutcomeStored, Seq: 1},
			{Index: 1, Outcome: OutcomeDuplicate, Seq: 1},
			{Index: 2, Outcome: OutcomeStored, Seq: 18446744073709551615},
			{Index: 3, Outcome: OutcomeStored},
		}}},
		{"rejected", Result{Events: []Outcome{{Index: 0, Outcome: OutcomeRejected, Field: "user", Reason: "<&> \"bad\""}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := httptest.NewRecorder()
			httpjson.Write(want, http.StatusOK, &tt.res)
			got := httptest.NewRecorder()
			writeResult(got, &tt.res)
			if got.Code != want.Code || got.Body.String() != want.Body.String() ||
				got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
				t.Fatalf("writeResult: %d %q %q\nWriteJSON: %d %q %q", got.Code, got.Header().Get("Content-Type"), got.Body,
					want.Code, want.Header().Get("Content-Type"), want.Body)
			}
		})
	}
}

// TestReadAllAnyDeclaredLength checks that a body is read whole whatever
// length was declared for it.
func TestReadAllAnyDeclaredLength(t *testing.T) {
	body := strings.Repeat("0123456789", 1000)
	for _, declared := range []int64{-1, 0, 1, 9999, 10000, 10001, maxPresize + 1} {
		got, err := readAll(iotest.OneByteReader(strings.NewReader(body)), declared)
		if err != nil || string(got) != body {
			t.Errorf("declared %d: read %d bytes, %v", declared, len(got), err)
		}
	}
	if _, err := readAll(iotest.ErrReader(errors.New("broken")), 10); err == nil {
		t.Error("a broken upload reads without error")
	}
}
