// Package nettest helps tests that start servers on the loopback
// interface.
package nettest

import (
	"net"
	"testing"
)

// FreeAddr is a loopback host:port that was free when asked: for a server
// the test starts by address (another process may take the port in
// between, which the server then reports).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
