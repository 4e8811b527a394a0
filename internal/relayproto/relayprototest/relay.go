package relayprototest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Relay is a relay over HTTP for tests, reached at URI: it takes publish
// requests that Authorize accepts, records their notifications and
// answers each device with the status Status gives it (Delivered unless
// changed with SetStatus).
type Relay struct {
	*httptest.Server
	// authorize checks a request's credentials; nil when it answered.
	authorize func(w http.ResponseWriter, req *http.Request) bool

	mu     sync.Mutex
	got    []relayproto.Notification
	status func(relayproto.Recipient) relayproto.DeviceStatus
}

// NewRelay starts a Relay, stopped when tb ends. authorize, when not nil,
// checks each request's credentials and answers it itself when it
// refuses them (returning false); when nil, any bearer token will do.
func NewRelay(tb testing.TB, authorize func(w http.ResponseWriter, req *http.Request) bool) *Relay {
	tb.Helper()
	if authorize == nil {
		authorize = AnyBearer
	}
	r := &Relay{authorize: authorize, status: Delivered}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	tb.Cleanup(r.Close)
	return r
}

// AnyBearer accepts any request with a bearer token and answers 401 to
// the others.
func AnyBearer(w http.ResponseWriter, req *http.Request) bool {
	if !strings.HasPrefix(req.Header.Get("Authorization"), "Bearer ") {
		w.WriteHeader(http.StatusUnauthorized)
		return false
	}
	return true
}

// URI is the relay's proxy Uri, as pushctl proxy enable takes it.
func (r *Relay) URI() string { return r.URL + "/PushNotifications" }

// SetStatus changes the status each device gets from now on.
func (r *Relay) SetStatus(status func(relayproto.Recipient) relayproto.DeviceStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
}

// Notifications returns the notifications of every request taken, in
// order.
func (r *Relay) Notifications() []relayproto.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayproto.Notification(nil), r.got...)
}

func (r *Relay) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/PushNotifications"+relayproto.PublishPath {
		http.NotFound(w, req)
		return
	}
	if !r.authorize(w, req) {
		return
	}
	var body relayproto.Request
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.got = append(r.got, body.Notifications...)
	resp := Answer(body, r.status)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}
