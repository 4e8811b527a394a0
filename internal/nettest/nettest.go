// Package nettest helps tests that start servers on the loopback
// interface.
package nettest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreeAddr is a loopback host:port that was free when asked, for a server
// the test starts by address: a port of FreePorts, so that no outgoing
// connection takes it before the server listens.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}

// FreePorts returns n TCP ports on the loopback interface that were free a
// moment ago, chosen at random below the kernel's ephemeral range: a port
// from that range (what listening on port 0 gives) can be taken by any
// outgoing connection while its server is down, and a node restarted on it
// would then fail with "address already in use". Each port is reserved for
// this process until it ends (reserve), so that no other test or process
// choosing ports here takes it while its server is down either: chaos's
// cluster-restart once failed when another test's server took a stopped
// NATS node's monitoring port. The n ports differ, and differ from every
// port this process chose before.
func FreePorts(n int) ([]int, error) {
	low := ephemeralLow()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("choosing %d free ports below %d: too many in use", n, low)
		}
		port := 10000 + rng.IntN(low-10000)
		release, ok := reserve(port)
		if !ok {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			release()
			continue
		}
		lns = append(lns, ln)
		ports = append(ports, port)
	}
	return ports, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux),
// or 32768.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil && low > 11000 {
				return low
			}
		}
	}
	return 32768
}
