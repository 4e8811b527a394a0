package chaos

import (
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sideshow/apns2/token"

	"github.com/pushproxy/pushproxy/internal/providers/apns/apnstest"
)

// APNs identity of the chaos tests' apps (each organization's app has a
// signing key of its own under this key id).
const (
	apnsKeyID  = "CHAOSKEY01"
	apnsTeamID = "CHAOSTEAM1"
)

// badge is one push a device received.
type badge struct {
	Count int
	At    time.Time
}

// providerFault is how the provider answers every push for a while.
type providerFault int32

// The provider's faults: the ones APNs answers with when its provider key
// is revoked (403 InvalidProviderToken), when it is down or shutting down
// (503 ServiceUnavailable), when it throttles (429 TooManyRequests), and a
// provider that takes requests and answers none until it comes back.
const (
	faultNone providerFault = iota
	faultCredential
	faultUnavailable
	faultThrottled
	faultStalled
)

// answer is the status and reason APNs answers with during f; 0 for a
// fault that answers nothing (or none).
func (f providerFault) answer() (int, string) {
	switch f {
	case faultCredential:
		return http.StatusForbidden, "InvalidProviderToken"
	case faultUnavailable:
		return http.StatusServiceUnavailable, "ServiceUnavailable"
	case faultThrottled:
		return http.StatusTooManyRequests, "TooManyRequests"
	}
	return 0, ""
}

// String names the fault in the run's notes.
func (f providerFault) String() string {
	if status, reason := f.answer(); status != 0 {
		return fmt.Sprintf("%d %s", status, reason)
	}
	if f == faultStalled {
		return "no answer"
	}
	return "none"
}

// provider is an APNs provider API over TLS and HTTP/2, living in the test
// process, that records every badge each device receives in arrival order.
// It can be told to answer every push with a fault (setFault).
type provider struct {
	topic  string // the app's APNs topic (bundle id)
	srv    *httptest.Server
	key    *ecdsa.PublicKey
	caFile string // PEM of the server's certificate, for SSL_CERT_FILE
	keyP8  string // the signing key for the relay's app registration

	fault atomic.Int32 // a providerFault
	// latency is how long each push waits before it is looked at (a
	// time.Duration): a push service's round trip, which keeps sends in
	// flight at the relay.
	latency atomic.Int64

	mu      sync.Mutex
	tokens  map[string]bool // provider tokens already verified
	badges  map[string][]badge
	faults  int           // pushes answered with a fault, or held by one
	resume  chan struct{} // closed when a stall ends
	invalid []string
	last    time.Time
}

// newProvider starts the provider of the app with APNs topic topic, and
// writes its CA and signing key into dir.
func newProvider(dir, topic string) (*provider, error) {
	keyP8, pub, err := apnstest.WriteKey(dir, apnsKeyID)
	if err != nil {
		return nil, err
	}
	p := &provider{topic: topic, key: pub, keyP8: keyP8, tokens: map[string]bool{}, badges: map[string][]badge{}}
	if p.srv, p.caFile, err = apnstest.StartServer(dir, http.HandlerFunc(p.serve)); err != nil {
		return nil, err
	}
	return p, nil
}

// close stops the server.
func (p *provider) close() { p.srv.Close() }

// url is the provider's base URL (the relay's --apns-host).
func (p *provider) url() string { return p.srv.URL }

func (p *provider) serve(w http.ResponseWriter, r *http.Request) {
	answer := func(status int, reason string) {
		w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000000")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"reason":%q}`, reason)
	}
	invalid := func(status int, reason string) {
		p.mu.Lock()
		if len(p.invalid) < 20 {
			p.invalid = append(p.invalid, reason)
		}
		p.mu.Unlock()
		answer(status, reason)
	}
	if r.ProtoMajor != 2 {
		invalid(http.StatusBadRequest, "not HTTP/2")
		return
	}
	device, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if r.Method != http.MethodPost || !ok || device == "" {
		invalid(http.StatusNotFound, "bad path "+r.URL.Path)
		return
	}
	if d := time.Duration(p.latency.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			// The relay went away before the answer: not delivered.
			return
		}
	}
	f := providerFault(p.fault.Load())
	if status, reason := f.answer(); status != 0 {
		p.mu.Lock()
		p.faults++
		p.mu.Unlock()
		answer(status, reason)
		return
	}
	if f == faultStalled {
		p.mu.Lock()
		p.faults++
		resume := p.resume
		p.mu.Unlock()
		select {
		case <-resume:
			// Back: the push goes on as if it had just arrived.
		case <-r.Context().Done():
			// The relay gave up on it and reset the stream: APNs never
			// delivers a push it did not answer (the relay sends the badge
			// again, later and newer).
			return
		}
	}
	if !p.verify(strings.TrimPrefix(r.Header.Get("Authorization"), "bearer ")) {
		invalid(http.StatusForbidden, "InvalidProviderToken (bad token)")
		return
	}
	if r.Header.Get("apns-topic") != p.topic {
		invalid(http.StatusBadRequest, "DeviceTokenNotForTopic")
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		// The client reset the stream before its body arrived (its
		// request timed out, say while it was stopped): a request
		// abandoned, not a protocol error; APNs never sees it.
		return
	}
	var body struct {
		APS struct {
			Badge *int `json:"badge"`
		} `json:"aps"`
	}
	if err := json.Unmarshal(data, &body); err != nil || body.APS.Badge == nil {
		invalid(http.StatusBadRequest, "PayloadEmpty")
		return
	}
	now := time.Now()
	p.mu.Lock()
	p.badges[device] = append(p.badges[device], badge{Count: *body.APS.Badge, At: now})
	p.last = now
	p.mu.Unlock()
	w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000000")
	w.WriteHeader(http.StatusOK)
}

// verify checks an ES256 provider token, remembering the good ones.
func (p *provider) verify(bearer string) bool {
	p.mu.Lock()
	ok := p.tokens[bearer]
	p.mu.Unlock()
	if ok {
		return true
	}
	parsed, err := jwt.Parse(bearer, func(*jwt.Token) (any, error) { return p.key, nil }, jwt.WithValidMethods([]string{"ES256"}))
	if err != nil || parsed.Header["kid"] != apnsKeyID {
		return false
	}
	if claims, _ := parsed.Claims.(jwt.MapClaims); claims["iss"] != apnsTeamID {
		return false
	}
	p.mu.Lock()
	p.tokens[bearer] = true
	p.mu.Unlock()
	return true
}

// token is a provider token the provider takes, signed with the app's key
// the way the relay signs its own (github.com/sideshow/apns2/token), for
// a client that signs none itself (the raw chain's relay).
func (p *provider) token() (string, error) {
	key, err := token.AuthKeyFromFile(p.keyP8)
	if err != nil {
		return "", fmt.Errorf("reading the APNs key: %w", err)
	}
	t := &token.Token{AuthKey: key, KeyID: apnsKeyID, TeamID: apnsTeamID}
	if _, err := t.Generate(); err != nil {
		return "", fmt.Errorf("signing a provider token: %w", err)
	}
	return t.Bearer, nil
}

// setFault makes every push meet f from now on (faultNone: succeed
// again). Pushes held by a stall go on when it ends.
func (p *provider) setFault(f providerFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := providerFault(p.fault.Swap(int32(f)))
	if f == faultStalled && was != faultStalled {
		p.resume = make(chan struct{})
	}
	if was == faultStalled && f != faultStalled {
		close(p.resume)
	}
}

// snapshot returns a copy of every device's badges.
func (p *provider) snapshot() map[string][]badge {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]badge, len(p.badges))
	for d, b := range p.badges {
		out[d] = append([]badge(nil), b...)
	}
	return out
}

// lastBadge returns the latest badge of device.
func (p *provider) lastBadge(device string) (badge, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.badges[device]
	if len(b) == 0 {
		return badge{}, false
	}
	return b[len(b)-1], true
}

// stats returns the time of the latest push, the number of pushes answered
// with a fault or held by one, and the protocol errors seen.
func (p *provider) stats() (last time.Time, faults int, invalid []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.faults, append([]string(nil), p.invalid...)
}
