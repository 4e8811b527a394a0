package httpjson

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, &Error{Status: 422, Code: "invalid_field", Field: "user", Message: "required"})
	var got struct{ Error Error }
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 422 || got.Error.Field != "user" || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %+v", rec.Code, got)
	}
}
