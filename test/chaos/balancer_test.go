package chaos

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// balancer is a TCP load balancer in front of relay replicas, as an
// operator's would be: each connection goes to the next replica in turn
// that accepts it (a dead replica is skipped, as a balancer's passive
// health check would), and a connection whose replica dies is closed, so
// that a request in flight there fails and its client tries again.
type balancer struct {
	ln       net.Listener
	backends []string

	mu     sync.Mutex
	next   int
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// balancerDialTimeout bounds a dial to one replica: on loopback a dead
// replica refuses at once.
const balancerDialTimeout = time.Second

// newBalancer listens on addr and spreads its connections over backends.
func newBalancer(addr string, backends []string) (*balancer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &balancer{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	b.wg.Go(b.accept)
	return b, nil
}

// accept serves connections until close.
func (b *balancer) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		if !b.track(c) {
			c.Close()
			return
		}
		b.wg.Go(func() { b.serve(c) })
	}
}

// serve forwards c to a replica both ways until either end closes.
func (b *balancer) serve(c net.Conn) {
	defer b.untrack(c)
	r, err := b.dial()
	if err != nil {
		return
	}
	if !b.track(r) {
		r.Close()
		return
	}
	defer b.untrack(r)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Either end gone: the other is closed with it, so that a client
		// whose replica died learns it at once.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(r, c)
	go pipe(c, r)
	<-done
	<-done
}

// dial connects to the next replica in turn that accepts, trying each
// once.
func (b *balancer) dial() (net.Conn, error) {
	b.mu.Lock()
	first := b.next
	b.next = (b.next + 1) % len(b.backends)
	b.mu.Unlock()
	var errs []error
	for i := range b.backends {
		c, err := net.DialTimeout("tcp", b.backends[(first+i)%len(b.backends)], balancerDialTimeout)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// track records a connection to close at close; false once closed.
func (b *balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (b *balancer) untrack(c net.Conn) {
	c.Close()
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

// close stops listening, closes every connection and waits for them.
func (b *balancer) close() {
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.ln.Close()
	b.wg.Wait()
}
