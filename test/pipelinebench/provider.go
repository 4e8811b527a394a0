package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushproxy/pushproxy/internal/providers/apns/apnstest"
)

// The bench's APNs app, as registered with the pipeline's relay.
const (
	benchTopic  = "com.example.pipelinebench"
	benchKeyID  = "BENCHKEY01"
	benchTeamID = "BENCHTEAM1"
)

// clock gives times as nanoseconds since the bench started, on the
// monotonic clock: the load generator stamps events with it and the
// provider stamps badges, so latencies are differences of two int64s.
type clock struct{ epoch time.Time }

func newClock() *clock { return &clock{epoch: time.Now()} }

// now is the time since the epoch in nanoseconds.
func (c *clock) now() int64 { return int64(time.Since(c.epoch)) }

// arrival is one badge a device received.
type arrival struct {
	count int64
	at    int64 // clock nanoseconds
}

// provider is an APNs provider API over TLS and HTTP/2 in the bench
// process. Device tokens are users' indexes in 64 hexadecimal digits; it
// records each user's badges in arrival order, each higher than the last. It does not verify the
// provider token (the relay signs it with the key the bench made): it
// measures, it does not test.
type provider struct {
	srv     *httptest.Server
	clock   *clock
	caFile  string
	keyFile string

	pushes atomic.Int64
	bad    atomic.Int64

	mu       sync.Mutex
	arrivals [][]arrival
	badWhy   string
}

// startProvider starts the provider for users devices and writes its CA
// certificate and the app's signing key into dir.
func startProvider(dir string, users int, c *clock) (*provider, error) {
	keyFile, _, err := apnstest.WriteKey(dir, benchKeyID)
	if err != nil {
		return nil, fmt.Errorf("writing the APNs key: %w", err)
	}
	p := &provider{clock: c, keyFile: keyFile, arrivals: make([][]arrival, users)}
	if p.srv, p.caFile, err = apnstest.StartServer(dir, http.HandlerFunc(p.serve)); err != nil {
		return nil, err
	}
	return p, nil
}

// close stops the server.
func (p *provider) close() { p.srv.Close() }

// url is the provider's base URL, the app's --apns-host.
func (p *provider) url() string { return p.srv.URL }

func (p *provider) serve(w http.ResponseWriter, r *http.Request) {
	at := p.clock.now()
	w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000000")
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	u, err := strconv.ParseUint(token, 16, 64)
	if r.ProtoMajor != 2 || r.Method != http.MethodPost || !ok || err != nil || u >= uint64(len(p.arrivals)) {
		p.refuse(w, http.StatusBadRequest, fmt.Sprintf("%s %s over HTTP/%d", r.Method, r.URL.Path, r.ProtoMajor))
		return
	}
	var body struct {
		APS struct {
			Badge *int64 `json:"badge"`
		} `json:"aps"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.APS.Badge == nil {
		p.refuse(w, http.StatusBadRequest, "no badge in the payload")
		return
	}
	p.mu.Lock()
	// Only a higher badge covers more events: a lower one arriving after
	// it (the raw chain does not keep a user's pushes in order) is not
	// recorded, so that each user's badges stay sorted.
	if a := p.arrivals[u]; len(a) == 0 || a[len(a)-1].count < *body.APS.Badge {
		p.arrivals[u] = append(a, arrival{count: *body.APS.Badge, at: at})
	}
	p.mu.Unlock()
	p.pushes.Add(1)
	w.WriteHeader(http.StatusOK)
}

// refuse answers a request the provider cannot take, remembering the first
// reason.
func (p *provider) refuse(w http.ResponseWriter, status int, why string) {
	if p.bad.Add(1) == 1 {
		p.mu.Lock()
		p.badWhy = why
		p.mu.Unlock()
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"reason":%q}`, "BadDeviceToken")
}

// refused is how many requests the provider refused, and why the first was.
func (p *provider) refused() (int64, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bad.Load(), p.badWhy
}

// covered reports whether every user u with want[u] > 0 has received a
// badge of at least want[u].
func (p *provider) covered(want []int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for u, c := range want {
		if c == 0 {
			continue
		}
		a := p.arrivals[u]
		if len(a) == 0 || a[len(a)-1].count < c {
			return false
		}
	}
	return true
}

// firstCovering returns when user u first received a badge of at least
// count, or false. A user's recorded badges only grow, so it searches.
func (p *provider) firstCovering(u int, count int64) (int64, bool) {
	a := p.arrivals[u]
	lo, hi := 0, len(a)
	for lo < hi {
		mid := (lo + hi) / 2
		if a[mid].count >= count {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo == len(a) {
		return 0, false
	}
	return a[lo].at, true
}

// trim forgets every badge but each user's last, once a step's latencies
// are counted, so a long run keeps little.
func (p *provider) trim() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for u, a := range p.arrivals {
		if len(a) > 1 {
			p.arrivals[u] = append(make([]arrival, 0, 4), a[len(a)-1])
		}
	}
}

// locked runs f with the badges locked (for firstCovering).
func (p *provider) locked(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}
