package chaos

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
)

// netCut stands between one process and the NATS nodes: a TCP proxy per
// node, on loopback, that forwards both ways until cut. A cut is a
// network partition as the ends see it: nothing more is delivered in the
// directions cut, not even a close; the connections stay open, and new
// ones are accepted but never reach a node (a handshake needs both
// directions). At the heal, every connection that lived through the cut
// is closed without delivering what it held: a cut longer than both
// ends' ping timeouts (4 to 6 s: the nodes' testdata/nats-server.conf.tmpl,
// the clients' internal/broker) leaves neither end holding its
// connection by then, and the process connects afresh. What the process
// sends elsewhere (a dispatcher's pushes to the relay) is not cut.
//
// The nodes must not advertise their own addresses to clients (the
// cluster's no_advertise), or a client would reconnect around the proxy.
type netCut struct {
	lns   []net.Listener
	addrs []string // the proxies' addresses, in the order of their nodes

	mu     sync.Mutex
	healed chan struct{} // while cut, closed at the heal; nil otherwise
	dirs   direction     // the directions cut, while cut
	links  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup
}

// link is one proxied connection: the process's end, and the node's once
// dialled.
type link struct {
	client, server net.Conn
	closed         bool
}

// direction is a set of directions a netCut cuts.
type direction uint8

// The directions of a cut.
const (
	toNATS   direction = 1 << iota // what the process sends
	fromNATS                       // what the nodes send it
	bothWays = toNATS | fromNATS
)

// String names the directions, for the summary table.
func (d direction) String() string {
	switch d {
	case toNATS:
		return "outbound only"
	case fromNATS:
		return "inbound only"
	default:
		return "both ways"
	}
}

// newNetCut starts a proxy for each of the nodes' client addresses.
func newNetCut(nodes []string) (*netCut, error) {
	c := &netCut{links: map[*link]struct{}{}}
	for _, node := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.close()
			return nil, fmt.Errorf("listening for the proxy to %s: %w", node, err)
		}
		c.lns = append(c.lns, ln)
		c.addrs = append(c.addrs, ln.Addr().String())
		c.wg.Go(func() { c.accept(ln, node) })
	}
	return c, nil
}

// natsURLs is what the process is given as --nats-url.
func (c *netCut) natsURLs() string {
	urls := make([]string, len(c.addrs))
	for i, a := range c.addrs {
		urls[i] = "nats://" + a
	}
	return strings.Join(urls, ",")
}

// cut starts a partition in the directions dirs; a cut already on
// widens to them.
func (c *netCut) cut(dirs direction) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.healed == nil {
		c.healed = make(chan struct{})
	}
	c.dirs |= dirs
}

// heal ends a partition: the connections that lived through it are
// closed, and new ones go through again.
func (c *netCut) heal() {
	c.mu.Lock()
	healed := c.healed
	c.healed, c.dirs = nil, 0
	for l := range c.links {
		c.dropLocked(l)
	}
	c.mu.Unlock()
	if healed != nil {
		close(healed)
	}
}

// close stops the proxies and closes every connection.
func (c *netCut) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	for _, ln := range c.lns {
		ln.Close()
	}
	c.heal()
	c.wg.Wait()
}

// accept serves the process's connections to node until the listener
// closes.
func (c *netCut) accept(ln net.Listener, node string) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c.wg.Go(func() { c.serve(conn, node) })
	}
}

// serve forwards one connection to node, both ways, until either end
// closes it or a heal does.
func (c *netCut) serve(conn net.Conn, node string) {
	l := &link{client: conn}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return
	}
	c.links[l] = struct{}{}
	c.mu.Unlock()
	// A connection made during a cut never reaches the node: the heal
	// closes it.
	if !c.pass(l, bothWays) {
		return
	}
	server, err := net.Dial("tcp", node)
	c.mu.Lock()
	if err != nil || l.closed {
		c.dropLocked(l)
		c.mu.Unlock()
		if server != nil {
			server.Close()
		}
		return
	}
	l.server = server
	c.mu.Unlock()
	c.wg.Go(func() { c.forward(l, toNATS, server, conn) })
	c.forward(l, fromNATS, conn, server)
}

// forward copies from src to dst, in the direction dir, until either
// fails. While dir is cut, what it read, and an end's close, wait for the
// heal, which drops the link instead.
func (c *netCut) forward(l *link, dir direction, dst, src net.Conn) {
	defer c.drop(l)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !c.pass(l, dir) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// pass waits while a cut of any of dirs is on, and reports whether l is
// still open.
func (c *netCut) pass(l *link, dirs direction) bool {
	c.mu.Lock()
	healed := c.healed
	if c.dirs&dirs == 0 {
		healed = nil
	}
	c.mu.Unlock()
	if healed != nil {
		<-healed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !l.closed
}

// drop closes both ends of l.
func (c *netCut) drop(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(l)
}

// dropLocked is drop with c.mu held.
func (c *netCut) dropLocked(l *link) {
	if l.closed {
		return
	}
	l.closed = true
	l.client.Close()
	if l.server != nil {
		l.server.Close()
	}
	delete(c.links, l)
}

// errNoCut is a fault that needs netCuts, in a deployment started
// without them (systemOptions.netCuts, routeCuts).
var errNoCut = errors.New("the deployment was started without the network cuts this fault needs")
