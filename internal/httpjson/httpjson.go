// Package httpjson is how every pushproxy HTTP API answers: a JSON body,
// and for an error {"error":{"status":422,"code":"invalid_field",
// "field":"user","message":"..."}}, with a stable code, the field at
// fault and a message that says what was wrong.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write answers with status and v as JSON.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// Error is the JSON error answer of every pushproxy HTTP API.
type Error struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// Error is the message.
func (e *Error) Error() string { return e.Message }

// WriteError answers with e as the JSON error body.
func WriteError(w http.ResponseWriter, e *Error) {
	Write(w, e.Status, map[string]*Error{"error": e})
}
