package graph

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeBatchGolden(t *testing.T) {
	b, err := DecodeBatch(readFile(t, "batch_mixed.json"))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id         string
		status     int
		retryAfter string
	}
	var got []row
	for _, it := range b.Responses {
		got = append(got, row{it.ID, it.Status, it.Header("retry-after")})
	}
	want := []row{{"2", 429, "1"}, {"0", 200, ""}, {"1", 404, ""}}
	if len(got) != len(want) {
		t.Fatalf("responses %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("response %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if n, err := b.Responses[1].UnreadItemCount(); err != nil || n != 12 {
		t.Errorf("unreadItemCount %d, %v", n, err)
	}
	if e := apiError(b.Responses[2].Status, b.Responses[2].Body); e.Code != "MailboxNotEnabledForRESTAPI" || !strings.HasPrefix(e.Error(), "Graph answered 404 MailboxNotEnabledForRESTAPI: ") {
		t.Errorf("error %v", e)
	}
}

func TestDecodeBatchErrors(t *testing.T) {
	item := func(id string, status string) string { return `{"id":` + id + `,"status":` + status + `}` }
	tests := []struct {
		name string
		body string
	}{
		{"not JSON", `<html>`},
		{"not an object", `[]`},
		{"no responses", `{"value":[]}`},
		{"responses not an array", `{"responses":{}}`},
		{"too many", `{"responses":[` + strings.Repeat(item(`"x"`, "200")+",", 20) + item(`"y"`, "200") + `]}`},
		{"no id", `{"responses":[{"status":200}]}`},
		{"empty id", `{"responses":[` + item(`""`, "200") + `]}`},
		{"control character in id", `{"responses":[` + item(`"a\u0000"`, "200") + `]}`},
		{"long id", `{"responses":[` + item(`"`+strings.Repeat("a", 65)+`"`, "200") + `]}`},
		{"duplicate id", `{"responses":[` + item(`"1"`, "200") + "," + item(`"1"`, "404") + `]}`},
		{"no status", `{"responses":[{"id":"1"}]}`},
		{"status out of range", `{"responses":[` + item(`"1"`, "600") + `]}`},
		{"header not a string", `{"responses":[{"id":"1","status":200,"headers":{"Retry-After":1}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := DecodeBatch([]byte(tt.body)); !errors.Is(err, ErrMalformedBatch) || b != nil {
				t.Fatalf("got %+v, %v", b, err)
			}
		})
	}
}

func TestUnreadItemCount(t *testing.T) {
	tests := []struct {
		body string
		want int
		ok   bool
	}{
		{`{"unreadItemCount":0}`, 0, true},
		{`{"id":"x","unreadItemCount":2147483647,"totalItemCount":5}`, 2147483647, true},
		{`{"unreadItemCount":-1}`, 0, false},
		{`{"unreadItemCount":2147483648}`, 0, false},
		{`{"unreadItemCount":1.5}`, 0, false},
		{`{"unreadItemCount":"3"}`, 0, false},
		{`{"totalItemCount":3}`, 0, false},
		{`"eyJ1bnJlYWRJdGVtQ291bnQiOjN9"`, 0, false},
		{``, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			it := BatchItem{ID: "1", Status: 200, Body: []byte(tt.body)}
			n, err := it.UnreadItemCount()
			if tt.ok != (err == nil) || n != tt.want || (err != nil && !errors.Is(err, ErrMalformedBatch)) {
				t.Fatalf("got %d, %v", n, err)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		{"1", time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, true},
		{"Sat, 01 Jun 2030 12:00:30 GMT", 30 * time.Second, true},
		{"Sat, 01 Jun 2030 11:59:00 GMT", 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"99999999999", 0, false},
		{"soon", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			if got, ok := retryAfter(tt.value, now); got != tt.want || ok != tt.ok {
				t.Fatalf("got %v, %v", got, ok)
			}
		})
	}
}
