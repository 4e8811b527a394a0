package sources

import (
	"errors"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/events"
)

func TestClip(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes
	got := Clip(long)
	if !strings.HasSuffix(got, "…") || len(got) > 64+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Fatalf("Clip = %q", got)
	}
	if Clip("short") != "short" {
		t.Fatal("short strings must stay")
	}
}

func TestStrictNamesTheField(t *testing.T) {
	type inner struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
		//lint:ignore U1000 an unexported field, which strict decoding must not name
		skip int
	}
	tests := []struct{ body, field, reason string }{
		{`{"name":"x","extra":1}`, "p.extra", "unknown field (known fields: name, count)"},
		{`{"count":"2"}`, "p.count", "must be an integer, got string"},
		{`[1]`, "p", "must be an object, got array"},
		{`null`, "p", "must be a JSON object, got null"},
	}
	for _, tt := range tests {
		var v inner
		err := Strict([]byte(tt.body), &v, "p.")
		var ve *events.ValidationError
		if !errors.As(err, &ve) || ve.Field != tt.field || ve.Reason != tt.reason {
			t.Errorf("%s: got %v, want field %q reason %q", tt.body, err, tt.field, tt.reason)
		}
	}
}

func TestObject(t *testing.T) {
	for body, want := range map[string]string{
		`{}`:   "",
		`[]`:   "must be a JSON object, got array",
		`null`: "got null",
		`{`:    "not valid JSON",
	} {
		err := Object([]byte(body))
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("Object(%s) = %v, want %q", body, err, want)
		}
	}
}
