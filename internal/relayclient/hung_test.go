package relayclient

import (
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// front stands between the client and a test relay as a TCP balancer
// would. Each connection it accepts reaches the relay, or a black hole
// that accepts it and never answers (a replica stopped with SIGSTOP,
// whose kernel still accepts); freeze has the connections made so far
// stop carrying anything, both ways.
type front struct {
	ln      net.Listener
	backend string
	// toRelay says whether the n-th connection (from 1) reaches the relay.
	toRelay func(n int) bool
	// frozenUpTo is the number of connections frozen: those made before
	// the last freeze.
	frozenUpTo atomic.Int64
	done       chan struct{}

	mu    sync.Mutex
	n     int64
	conns []net.Conn
	wg    sync.WaitGroup
}

// newFront listens on loopback in front of backend until t ends.
func newFront(t *testing.T, backend string, toRelay func(n int) bool) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{ln: ln, backend: backend, toRelay: toRelay, done: make(chan struct{})}
	f.wg.Go(f.accept)
	t.Cleanup(f.close)
	return f
}

// freeze has every connection made so far carry nothing more.
func (f *front) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozenUpTo.Store(f.n)
}

// accepted is how many connections the front accepted.
func (f *front) accepted() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *front) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.n++
		n := f.n
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		if !f.toRelay(int(n)) {
			continue // held open, never read: the black hole
		}
		r, err := net.Dial("tcp", f.backend)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, r)
		f.mu.Unlock()
		f.wg.Go(func() { f.pipe(n, r, c) })
		f.wg.Go(func() { f.pipe(n, c, r) })
	}
}

// pipe copies connection n's bytes from src to dst until either closes,
// or until it is frozen: then it carries nothing until the front closes.
func (f *front) pipe(n int64, dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if n <= f.frozenUpTo.Load() {
			<-f.done
			return
		}
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *front) close() {
	f.ln.Close()
	close(f.done)
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// uri is the proxy Uri of the relay through the front.
func (f *front) uri() string { return "https://" + f.ln.Addr().String() + basePath }

// newTLSRelay starts an HTTPS (HTTP/2) test relay, set up by setup
// before it starts, if given, and returns it with the default client of
// relayclient, trusting it, with timeout.
func newTLSRelay(t *testing.T, timeout time.Duration, setup ...func(*httptest.Server)) (*testRelay, *http.Client) {
	t.Helper()
	tr := &testRelay{answer: succeed}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(tr.serve))
	srv.EnableHTTP2 = true
	for _, f := range setup {
		f(srv)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr.srv = srv
	hc := defaultHTTPClient(timeout, nil)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	hc.Transport.(*http.Transport).TLSClientConfig.RootCAs = pool
	return tr, hc
}

// TestAHungConnectionIsDroppedByItsPings: the connection to the relay
// goes silent (the replica behind it stopped) with a request in flight.
// The client pings it and drops it when the ping goes unanswered, so the
// request fails within seconds, not at its 30 s timeout; the next one
// goes over a new connection (a replica that runs).
func TestAHungConnectionIsDroppedByItsPings(t *testing.T) {
	tr, hc := newTLSRelay(t, 30*time.Second)
	f := newFront(t, tr.srv.Listener.Addr().String(), func(int) bool { return true })
	c := New(Config{Tokens: staticTokens{token: "t"}, HTTPClient: hc, Timeout: 30 * time.Second})
	if _, err := c.Publish(t.Context(), f.uri(), batchOf(1)); err != nil {
		t.Fatal(err)
	}

	f.freeze()
	_, err := c.Publish(t.Context(), f.uri(), batchOf(1))
	if err == nil {
		t.Fatal("a request on a hung connection succeeded")
	}
	if strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("the request on the hung connection waited out its timeout: %v", err)
	}
	if got, _ := Classify(err); got != ClassNetworking {
		t.Errorf("failure classified %s, want %s: %v", got, ClassNetworking, err)
	}
	if _, err := c.Publish(t.Context(), f.uri(), batchOf(1)); err != nil {
		t.Fatalf("after the hung connection was dropped: %v", err)
	}
	if n := f.accepted(); n != 2 {
		t.Errorf("%d connections made, want 2: the first, and one after it was dropped", n)
	}
}

// TestARequestNeverSentIsSentAgainAtOnce: the first connection reaches a
// replica that hangs (its TLS handshake never completes). The request
// never went out, so it is sent again at once over a new connection,
// which reaches a replica that runs: the publish succeeds, and the relay
// got it once.
func TestARequestNeverSentIsSentAgainAtOnce(t *testing.T) {
	tr, hc := newTLSRelay(t, 30*time.Second)
	f := newFront(t, tr.srv.Listener.Addr().String(), func(n int) bool { return n > 1 })
	c := New(Config{Tokens: staticTokens{token: "t"}, HTTPClient: hc, Timeout: 30 * time.Second})
	if _, err := c.Publish(t.Context(), f.uri(), batchOf(1)); err != nil {
		t.Fatalf("publish with a first connection to a hung replica: %v", err)
	}
	if n := len(tr.requests()); n != 1 {
		t.Errorf("the relay got %d requests, want 1", n)
	}
	if n := f.accepted(); n != 2 {
		t.Errorf("%d connections made, want 2", n)
	}
}
