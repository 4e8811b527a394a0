package brokertest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Proxy is a TCP proxy between NATS clients and a server that can lose
// messages on their way to a client, as a broken connection or a client
// too slow to keep up does: the server counts them delivered, the client
// never sees them.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	drops   []func(subject, reply string) bool // the next to match is drops[0]
	dropped []string                           // subjects of the messages dropped
	// frozen, while not nil, holds everything the server sends until it
	// is closed (Thaw); stopped ends the hold when the test ends.
	frozen  chan struct{}
	stopped chan struct{}
}

// StartProxy starts a proxy to the server at serverURL (nats://host:port)
// on a loopback port; it stops when the test ends.
func StartProxy(t testing.TB, serverURL string) *Proxy {
	t.Helper()
	target := strings.TrimPrefix(serverURL, "nats://")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listening: %v", err)
	}
	p := &Proxy{ln: ln, target: target, stopped: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(p.stopped)
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c) })
		}
	})
	return p
}

// URL is the address clients connect to.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// DropNext makes the proxy drop the next message, on any connection, for
// which match(subject, reply) is true; later ones pass.
func (p *Proxy) DropNext(match func(subject, reply string) bool) { p.DropInOrder(match) }

// DropInOrder makes the proxy drop the next message, on any connection,
// that matches[0] matches, then the next one after it that matches[1]
// matches, and so on; other messages pass.
func (p *Proxy) DropInOrder(matches ...func(subject, reply string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drops = matches
}

// Freeze holds everything servers send to clients, on every connection,
// new ones included, until Thaw: the connections stay open and the
// clients' bytes still reach the server, as with a server that was
// stopped (SIGSTOP) or a network that stopped delivering.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
}

// Thaw lets what Freeze held go on.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

// held waits while the proxy is frozen; false when the test ended.
func (p *Proxy) held() bool {
	p.mu.Lock()
	f := p.frozen
	p.mu.Unlock()
	if f == nil {
		return true
	}
	select {
	case <-f:
		return true
	case <-p.stopped:
		return false
	}
}

// Dropped returns the subjects of the messages dropped so far.
func (p *Proxy) Dropped() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.dropped...)
}

// errProxyStopped ends a connection held by Freeze when the test ends.
var errProxyStopped = errors.New("proxy stopped")

// serve relays one client connection until either side closes it.
func (p *Proxy) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(server, client)
		done <- struct{}{}
	}()
	go func() {
		_ = p.toClient(client, server)
		done <- struct{}{}
	}()
	<-done
}

// toClient copies the server's protocol to the client, message by message,
// leaving out a message that matches the drop rule.
func (p *Proxy) toClient(client io.Writer, server io.Reader) error {
	r := bufio.NewReaderSize(server, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return err
		}
		if !p.held() {
			return errProxyStopped
		}
		subject, reply, size, isMsg, err := messageLine(line)
		if err != nil {
			return err
		}
		if !isMsg {
			if _, err := client.Write(line); err != nil {
				return err
			}
			continue
		}
		payload := make([]byte, size+2) // and the closing CRLF
		if _, err := io.ReadFull(r, payload); err != nil {
			return err
		}
		if p.dropping(subject, reply) {
			continue
		}
		if _, err := client.Write(append(line, payload...)); err != nil {
			return err
		}
	}
}

// dropping reports whether a message is to be dropped, and records it.
func (p *Proxy) dropping(subject, reply string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.drops) == 0 || !p.drops[0](subject, reply) {
		return false
	}
	p.drops = p.drops[1:]
	p.dropped = append(p.dropped, subject)
	return true
}

// messageLine reads a MSG or HMSG control line: subject, reply (may be
// empty) and the size of the payload that follows (headers included).
func messageLine(line []byte) (subject, reply string, size int, isMsg bool, err error) {
	fields := strings.Fields(string(bytes.TrimRight(line, "\r\n")))
	if len(fields) == 0 {
		return "", "", 0, false, nil
	}
	var args []string
	switch strings.ToUpper(fields[0]) {
	case "MSG": // MSG <subject> <sid> [reply] <size>
		args = fields[1:]
		if len(args) != 3 && len(args) != 4 {
			return "", "", 0, false, fmt.Errorf("proxy: malformed %q", line)
		}
	case "HMSG": // HMSG <subject> <sid> [reply] <header size> <total size>
		if len(fields) != 5 && len(fields) != 6 {
			return "", "", 0, false, fmt.Errorf("proxy: malformed %q", line)
		}
		args = append(fields[1:len(fields)-2:len(fields)-2], fields[len(fields)-1])
	default:
		return "", "", 0, false, nil
	}
	size, err = strconv.Atoi(args[len(args)-1])
	if err != nil || size < 0 {
		return "", "", 0, false, errors.Join(fmt.Errorf("proxy: malformed size in %q", line), err)
	}
	if len(args) == 4 {
		reply = args[2]
	}
	return args[0], reply, size, true, nil
}
