package relayclient

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/relayproto/relayprototest"
)

// This file holds a small test relay: an httptest server that speaks the
// relay protocol, with a per-test answer for each request.

// basePath is where the test relay is mounted, like the real one.
const basePath = "/PushNotifications"

// staticTokens is a TokenSource with a fixed answer.
type staticTokens struct {
	token string
	err   error
}

func (s staticTokens) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return s.token, s.err
}

// received is one request the test relay got.
type received struct {
	at     time.Time
	header http.Header
	proto  int
	body   relayproto.Request
}

// answerFunc answers the n-th request (1-based).
type answerFunc func(n int, w http.ResponseWriter, r *http.Request, req relayproto.Request)

// testRelay is a relay test server.
type testRelay struct {
	srv *httptest.Server

	mu     sync.Mutex
	got    []received
	answer answerFunc
}

// newTestRelay starts a plain HTTP test relay answering with answer.
func newTestRelay(t *testing.T, answer answerFunc) *testRelay {
	t.Helper()
	tr := &testRelay{answer: answer}
	tr.srv = httptest.NewServer(http.HandlerFunc(tr.serve))
	t.Cleanup(tr.srv.Close)
	return tr
}

// uri is the proxy Uri of the test relay.
func (tr *testRelay) uri() string { return tr.srv.URL + basePath }

// setAnswer changes how the relay answers from now on.
func (tr *testRelay) setAnswer(a answerFunc) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.answer = a
}

// requests is a copy of what the relay received.
func (tr *testRelay) requests() []received {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]received(nil), tr.got...)
}

func (tr *testRelay) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != basePath+relayproto.PublishPath {
		writeFault(w, http.StatusNotFound, relayproto.Fault{Message: "no such endpoint"})
		return
	}
	if r.Method != http.MethodPost {
		writeFault(w, http.StatusMethodNotAllowed, relayproto.Fault{Message: "POST only"})
		return
	}
	var req relayproto.Request
	data, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(data, &req)
	}
	if err != nil {
		writeFault(w, http.StatusBadRequest, relayproto.Fault{Message: "malformed request: " + err.Error()})
		return
	}
	tr.mu.Lock()
	tr.got = append(tr.got, received{at: time.Now(), header: r.Header.Clone(), proto: r.ProtoMajor, body: req})
	n, answer := len(tr.got), tr.answer
	tr.mu.Unlock()
	answer(n, w, r, req)
}

// writeJSON writes v as a JSON answer with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeFault writes a relay fault.
func writeFault(w http.ResponseWriter, status int, f relayproto.Fault) {
	writeJSON(w, status, f)
}

// deliverAll is the relay's success answer: every device delivered.
func deliverAll(w http.ResponseWriter, req relayproto.Request) {
	writeJSON(w, http.StatusOK, relayprototest.Answer(req, relayprototest.Delivered))
}

// succeed answers every request with success.
func succeed(_ int, w http.ResponseWriter, _ *http.Request, req relayproto.Request) {
	deliverAll(w, req)
}

// always answers every request with fail.
func always(fail func(w http.ResponseWriter)) answerFunc {
	return func(_ int, w http.ResponseWriter, _ *http.Request, _ relayproto.Request) { fail(w) }
}

// status writes a bare status.
func status(code int) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) { w.WriteHeader(code) }
}

// fault writes a fault with status.
func fault(code int, f relayproto.Fault) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) { writeFault(w, code, f) }
}

// batchOf is a batch of n notifications with one device each.
func batchOf(n int) []relayproto.Notification {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var b []relayproto.Notification
	for i := range n {
		b = append(b, relayproto.Notification{
			ID:      "n" + string(rune('a'+i)),
			Payload: relayproto.Payload{TenantID: "tenant", UnseenEmailCount: i + 1, Language: "es-ES", BackgroundSyncType: relayproto.BackgroundSyncEmail},
			Recipients: []relayproto.Recipient{{
				AppID: "app", DeviceID: "device-" + string(rune('a'+i)), LastSubscriptionUpdate: now, InstallationID: "inst",
			}},
		})
	}
	return b
}

// fakeClock is a settable clock for the breaker.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// asError is err as an *Error, or a test failure.
func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	return e
}
