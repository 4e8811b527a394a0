package imap

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestSessionConnWindsDown(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newSessionConn(client)
	defer c.Close()
	// A deadline far away, then no deadline, as the client sets them:
	// once winding down, neither reaches past the limit.
	if err := c.SetDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	c.windDown(20 * time.Millisecond)
	for _, set := range []func(time.Time) error{c.SetDeadline, c.SetReadDeadline, c.SetWriteDeadline} {
		if err := set(time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("read after winding down: %v after %v", err, time.Since(start))
	}
	// An earlier deadline stays when winding down.
	early := newSessionConn(client)
	if err := early.SetDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	early.windDown(time.Hour)
	start = time.Now()
	if _, err := early.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second || !early.timedOut.Load() {
		t.Fatalf("read with an early deadline: %v after %v", err, time.Since(start))
	}
	// Closed by this package, it reads as ended.
	_ = c.Close()
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after close: %v", err)
	}
}
