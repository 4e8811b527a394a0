package nettest

import (
	"net"
	"strconv"
	"testing"
)

func TestFreePortsAreDistinctAndBelowTheEphemeralRange(t *testing.T) {
	ports, err := FreePorts(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p < 10000 || p >= ephemeralLow() {
			t.Fatalf("port %d: repeated or outside 10000..%d", p, ephemeralLow())
		}
		seen[p] = true
	}
	addr := FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	ln.Close()
	if _, port, _ := net.SplitHostPort(addr); port == "" || port == strconv.Itoa(0) {
		t.Fatalf("address %s", addr)
	}
}
