package chaos

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/relay"
)

// rawChainBinary is test/pipelinebench's binary, whose rawchain command
// runs the raw stages the cluster latency bench measures the deployment
// against.
const rawChainBinary = "pipelinebench"

// rawChainPath returns the raw chain's binary: bin's (make chaos-bin
// builds it), or one built into a temporary folder of b.
func rawChainPath(ctx context.Context, b *testing.B, bin string) (string, error) {
	if p := filepath.Join(bin, rawChainBinary); fileExists(p) {
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(b.TempDir(), rawChainBinary)
	return p, goBuild(ctx, root, []string{"build", "-o", p, "./test/" + rawChainBinary})
}

// startRawSystem starts the cluster latency bench's anchor: the chaos
// tests' 3-node cluster, provisioned the same way, with the raw chain's
// stages (test/pipelinebench, rawchain.go) in place of pushproxy's, each
// its own process as the deployment's are: a bare ingest handler, three
// plain durable consumers of a third of the partitions each that send
// every event as a push, and a bare relay handler that forwards each push
// to an APNs provider of its own. No state, coalescing, order or retries:
// what moving the events costs on this cluster and machine.
func startRawSystem(ctx context.Context, b *testing.B, bin, rawBin string) (*system, error) {
	dir, err := systemDir(b, "rawchain")
	if err != nil {
		return nil, err
	}
	s := newSystem(b, dir, bin, fabrikam)
	if s.provider, err = newProvider(s.dir, s.tenant.app); err != nil {
		return nil, err
	}
	token, err := s.provider.token()
	if err != nil {
		return nil, err
	}
	if err := s.startCluster(ctx, nodeCount, false); err != nil {
		return nil, err
	}
	if _, err := s.provision(ctx, nodeCount, 0); err != nil {
		return nil, err
	}
	ports, err := nettest.FreePorts(2 + dispatcherN)
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])) }
	start := func(p *proc, addr string) error {
		if err := p.start(); err != nil {
			return err
		}
		return httpReady(ctx, s.http, p, "http://"+addr+"/readyz", time.Minute)
	}
	stage := func(name, addr string, more ...string) *proc {
		args := append([]string{"rawchain", "-nats-url", s.natsURLs, "-http-addr", addr}, more...)
		return newProc(name, rawBin, s.dir, args, nil)
	}
	s.relayAddr = addr(0)
	s.relay = stage("raw-relay", s.relayAddr, "-parts", "relay", "-provider", s.provider.url(), "-provider-ca-file", s.provider.caFile,
		"-provider-authorization", "bearer "+token)
	s.relays = []*proc{s.relay}
	if err := start(s.relay, s.relayAddr); err != nil {
		return nil, err
	}
	relayURL := "http://" + s.relayAddr + relay.DefaultBasePath
	for i := range dispatcherN {
		var mine []string
		for p := range broker.DefaultLayout().Partitions {
			if p%dispatcherN == i {
				mine = append(mine, strconv.Itoa(p))
			}
		}
		a := addr(1 + i)
		s.dispatcherAddrs = append(s.dispatcherAddrs, a)
		s.dispatchers = append(s.dispatchers, stage(fmt.Sprintf("raw-dispatch-%d", i+1), a, "-parts", "dispatch",
			"-partitions", strings.Join(mine, ","), "-relay-url", relayURL, "-app", s.tenant.app))
		if err := start(s.dispatchers[i], a); err != nil {
			return nil, err
		}
	}
	s.ingestAddr = addr(1 + dispatcherN)
	s.ingest = stage("raw-ingest", s.ingestAddr, "-parts", "ingest")
	if err := start(s.ingest, s.ingestAddr); err != nil {
		return nil, err
	}
	return s, nil
}
