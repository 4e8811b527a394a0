package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pushproxy/pushproxy/internal/clip"
)

// JSON batching (POST {api}/$batch): up to MaxBatchRequests requests in one
// HTTP request, answered by one response per request, in any order, each
// with its own status, headers and body.
const (
	// MaxBatchRequests is the most requests Graph takes in one batch.
	MaxBatchRequests = 20
	// MaxBatchResponse bounds the answer to a batch, in bytes.
	MaxBatchResponse = 4 << 20
	// maxBatchID bounds a response's id.
	maxBatchID = 64
)

// BatchRequest is the body of a $batch request.
type BatchRequest struct {
	Requests []BatchRequestItem `json:"requests"`
}

// BatchRequestItem is one request of a batch; URL is relative to the API
// version, e.g. /users/{id}/mailFolders/inbox.
type BatchRequestItem struct {
	ID     string `json:"id"`
	Method string `json:"method"`
	URL    string `json:"url"`
}

// BatchResponse is the answer to a $batch request.
type BatchResponse struct {
	Responses []BatchItem `json:"responses"`
}

// BatchItem is the response to one request of a batch.
type BatchItem struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// ErrMalformedBatch matches every error of DecodeBatch with errors.Is.
var ErrMalformedBatch = errors.New("malformed Graph batch answer")

// DecodeBatch reads the answer to a $batch request: an object whose
// "responses" holds at most MaxBatchRequests responses, each with an id
// (unique, at most 64 bytes of printable text) and an HTTP status. Fields
// Graph may add are ignored.
func DecodeBatch(body []byte) (*BatchResponse, error) {
	var b struct {
		Responses *[]BatchItem `json:"responses"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedBatch, err)
	}
	if b.Responses == nil {
		return nil, fmt.Errorf("%w: no responses", ErrMalformedBatch)
	}
	items := *b.Responses
	if len(items) > MaxBatchRequests {
		return nil, fmt.Errorf("%w: %d responses (at most %d)", ErrMalformedBatch, len(items), MaxBatchRequests)
	}
	seen := make(map[string]bool, len(items))
	for i := range items {
		it := &items[i]
		if it.ID == "" || len(it.ID) > maxBatchID || !printable(it.ID) {
			return nil, fmt.Errorf("%w: response %d has no usable id", ErrMalformedBatch, i+1)
		}
		if seen[it.ID] {
			return nil, fmt.Errorf("%w: id %q answered twice", ErrMalformedBatch, it.ID)
		}
		seen[it.ID] = true
		if it.Status < 100 || it.Status > 599 {
			return nil, fmt.Errorf("%w: response %q has status %d", ErrMalformedBatch, it.ID, it.Status)
		}
	}
	return &BatchResponse{Responses: items}, nil
}

// Header returns the value of the response header name, matched
// case-insensitively, or "".
func (it *BatchItem) Header(name string) string {
	for k, v := range it.Headers {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// UnreadItemCount reads the unreadItemCount of a mailFolder body.
func (it *BatchItem) UnreadItemCount() (int, error) {
	var f struct {
		UnreadItemCount *int64 `json:"unreadItemCount"`
	}
	if err := json.Unmarshal(it.Body, &f); err != nil {
		return 0, fmt.Errorf("%w: the mailFolder of %q: %v", ErrMalformedBatch, it.ID, err)
	}
	switch {
	case f.UnreadItemCount == nil:
		return 0, fmt.Errorf("%w: the mailFolder of %q has no unreadItemCount", ErrMalformedBatch, it.ID)
	case *f.UnreadItemCount < 0 || *f.UnreadItemCount > 1<<31-1:
		return 0, fmt.Errorf("%w: the mailFolder of %q has unreadItemCount %d", ErrMalformedBatch, it.ID, *f.UnreadItemCount)
	}
	return int(*f.UnreadItemCount), nil
}

// APIError is an error answer of Graph: its HTTP status with the code
// and message of its error object, e.g. 403 ErrorAccessDenied.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	s := "Graph answered " + strconv.Itoa(e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// apiError reads the error object of an answer with status; a body that
// has none leaves the code and message empty.
func apiError(status int, body []byte) *APIError {
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	e := &APIError{Status: status}
	if json.Unmarshal(body, &b) == nil {
		e.Code, e.Message = clip.Text(b.Error.Code), clip.Text(b.Error.Message)
	}
	return e
}

// retryAfter reads a Retry-After value, delay-seconds or an HTTP date,
// as a wait from now; ok is false when the value is neither.
func retryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(value, 10, 32); err == nil {
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(value); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}
