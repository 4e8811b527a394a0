package chaos

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echoNode is a TCP server that answers each line with the same line and
// reports every line it got.
func echoNode(t *testing.T) (addr string, got <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					lines <- strings.TrimSpace(line)
					if _, err := io.WriteString(conn, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), lines
}

// quiet is how long a check that something does not arrive waits: what
// a cut lets through arrives in microseconds on loopback.
const quiet = 200 * time.Millisecond

// TestNetCut checks the chaos tests' network cut against an echo server:
// each direction cut holds what goes that way and only that, new
// connections wait, and the heal closes what lived through the cut
// without delivering what it held.
func TestNetCut(t *testing.T) {
	cases := []struct {
		dirs direction
		// reaches says whether a line sent during the cut reaches the
		// node; its echo never reaches the process.
		reaches bool
	}{
		{dirs: bothWays},
		{dirs: toNATS},
		{dirs: fromNATS, reaches: true},
	}
	for _, tc := range cases {
		t.Run(tc.dirs.String(), func(t *testing.T) {
			node, got := echoNode(t)
			c, err := newNetCut([]string{node})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.close)
			addr := strings.TrimPrefix(c.natsURLs(), "nats://")
			conn, r := dialLine(t, addr)
			exchange(t, conn, r, got, "before")

			c.cut(tc.dirs)
			send(t, conn, "during")
			if line, ok := receive(got, quiet); ok != tc.reaches {
				t.Errorf("the node got %q (%v) during the cut, want reached=%v", line, ok, tc.reaches)
			}
			echo := make(chan string, 1)
			go func() {
				line, _ := r.ReadString('\n')
				echo <- strings.TrimSpace(line)
			}()
			if line, ok := receive(echo, quiet); ok {
				t.Errorf("the process got %q during the cut", line)
			}
			// A connection made during the cut does not reach the node.
			late, lateR := dialLine(t, addr)
			send(t, late, "late")
			if line, ok := receive(got, quiet); ok {
				t.Errorf("the node got %q from a connection made during the cut", line)
			}

			c.heal()
			if line, ok := receive(echo, 10*time.Second); !ok || line != "" {
				t.Errorf("after the heal the process read %q, want its connection closed with nothing delivered", line)
			}
			if _, err := lateR.ReadString('\n'); !errors.Is(err, io.EOF) && !isReset(err) {
				t.Errorf("the connection made during the cut: read %v after the heal, want it closed", err)
			}
			if line, ok := receive(got, quiet); ok {
				t.Errorf("the node got %q after the heal: what the cut held must not be delivered", line)
			}
			again, againR := dialLine(t, addr)
			exchange(t, again, againR, got, "after")
		})
	}
}

func dialLine(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReader(conn)
}

func send(t *testing.T, conn net.Conn, line string) {
	t.Helper()
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// exchange sends line and checks that the node gets it and its echo
// comes back.
func exchange(t *testing.T, conn net.Conn, r *bufio.Reader, got <-chan string, line string) {
	t.Helper()
	send(t, conn, line)
	if g, ok := receive(got, 10*time.Second); !ok || g != line {
		t.Fatalf("the node got %q (%v), want %q", g, ok, line)
	}
	echo, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(echo) != line {
		t.Fatalf("echo %q, %v; want %q", echo, err, line)
	}
}

// receive waits up to wait for a value of ch.
func receive(ch <-chan string, wait time.Duration) (string, bool) {
	select {
	case v := <-ch:
		return v, true
	case <-time.After(wait):
		return "", false
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}
