package chaos

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/tlstest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The tokens and names of the system under test.
const (
	ingestToken    = "chaos-ingest-token"
	streamMail     = "MAIL"
	streamDead     = "PUSH_DEAD"
	membersSubject = "pushproxy.dispatcher.members"
	canaryApp      = "pushproxy-canary"
	nodeCount      = 3
	dispatcherN    = 3
)

// systemOptions choose what startSystem runs.
type systemOptions struct {
	// monitor starts cmd/monitor with a probe and a canary.
	monitor bool
	// dispatchers is how many dispatchers run (dispatcherN when 0);
	// partitions how many partitions MAIL has (provisioning's default
	// when 0).
	dispatchers, partitions int
	// netCuts puts each dispatcher's NATS connections behind a netCut of
	// its own, for faults that cut a dispatcher off from NATS.
	netCuts bool
	// routeCuts puts every route between two nodes behind a netCut, for
	// faults that cut a node off from the others while its clients
	// still reach it.
	routeCuts bool
	// neighbour starts a second organization's deployment (contoso: one
	// node, ingest, one dispatcher, a provider of its own) that pushes
	// through this deployment's relay, for faults of one organization
	// that must not reach the other.
	neighbour bool
	// relayArgs are more flags for the relay.
	relayArgs []string
	// relayReplicas, when more than 1, runs that many relays behind a
	// TCP load balancer (balancer), for faults of one replica.
	relayReplicas int
	// relayTLS has the relay serve HTTPS (HTTP/2) itself, with a test
	// CA's certificate its clients trust, as replicas behind a TCP
	// balancer do in deploy/kubernetes/relay.yaml; else it serves plain
	// HTTP (HTTP/1.1).
	relayTLS bool
}

// dispatcherCount is how many dispatchers opts asks for.
func (opts systemOptions) dispatcherCount() int {
	if opts.dispatchers > 0 {
		return opts.dispatchers
	}
	return dispatcherN
}

// system is a running pushproxy deployment of one organization: a 3-node
// JetStream cluster, ingest, three dispatchers, a relay in front of the
// test provider, and optionally the monitor, each an OS process. A
// neighbour has one node, one dispatcher and no relay of its own.
type system struct {
	tenant   tenant
	dir      string
	bin      string
	toolLog  string
	natsURLs string

	nodes       []*proc
	nodeNames   []string
	clientPorts []int
	// relay is the relay, or its first replica; relays are all of them,
	// relayAddrs their addresses (relayAddr is the balancer's, with
	// systemOptions.relayReplicas).
	relay       *proc
	relays      []*proc
	relayAddrs  []string
	balancer    *balancer
	ingest      *proc
	dispatchers []*proc
	monitor     *proc
	// cuts stand between each dispatcher and NATS, with
	// systemOptions.netCuts.
	cuts []*netCut
	// routeCuts stand on the routes node from dials to node to, with
	// systemOptions.routeCuts.
	routeCuts map[route]*netCut

	relayAddr, ingestAddr string
	dispatcherAddrs       []string
	// dispatcherDebugAddrs serve each dispatcher's Go profiles
	// (--debug-addr).
	dispatcherDebugAddrs []string

	// relayCerts are the relay's certificate and its CA, with
	// systemOptions.relayTLS; nil when it serves plain HTTP. relayCA is
	// the CA file this deployment's clients of a relay trust ("" for the
	// system's): its own relay's, or the one the neighbour pushes through.
	relayCerts *tlstest.Files
	relayCA    string
	// http reads the daemons' health and metrics, trusting relayCA.
	http *http.Client

	provider *provider
	// neighbour is the other organization's deployment, with
	// systemOptions.neighbour.
	neighbour *system
	nc        *nats.Conn
	js        jetstream.JetStream

	mu      sync.Mutex
	members map[string]memberSeen
}

// memberSeen is a dispatcher's latest heartbeat.
type memberSeen struct {
	owns []int
	at   time.Time
}

// crashes lists the runs of every process that ended on their own.
func (s *system) crashes() []string {
	var out []string
	for _, p := range s.procs() {
		out = append(out, p.crashed()...)
	}
	return out
}

// procs lists every process (for logs and cleanup).
func (s *system) procs() []*proc {
	out := append(append([]*proc(nil), s.nodes...), s.relays...)
	for _, p := range []*proc{s.ingest, s.monitor} {
		if p != nil {
			out = append(out, p)
		}
	}
	return append(out, s.dispatchers...)
}

// startSystem starts and configures the whole deployment the way an
// operator would (pushctl provision, auth, relay partner and app, proxy),
// and stops every process when t ends.
func startSystem(ctx context.Context, t testing.TB, bin string, opts systemOptions) (*system, error) {
	t.Helper()
	dir, err := systemDir(t, strings.ReplaceAll(t.Name(), "/", "-"))
	if err != nil {
		return nil, err
	}
	s := newSystem(t, dir, bin, fabrikam)
	if opts.relayTLS {
		certs := tlstest.Write(t, s.dir)
		s.relayCerts = &certs
		if err := s.trustRelay(certs.CA); err != nil {
			return nil, err
		}
	}
	if s.provider, err = newProvider(s.dir, s.tenant.app); err != nil {
		return nil, err
	}
	providerCAs := []string{s.provider.caFile}
	if opts.neighbour {
		nb := newSystem(t, filepath.Join(dir, "contoso"), bin, contoso)
		if err := os.Mkdir(nb.dir, 0o755); err != nil {
			return nil, fmt.Errorf("the neighbour's folder: %w", err)
		}
		if nb.provider, err = newProvider(nb.dir, nb.tenant.app); err != nil {
			return nil, err
		}
		s.neighbour = nb
		providerCAs = append(providerCAs, nb.provider.caFile)
	}
	if err := s.startCluster(ctx, nodeCount, opts.routeCuts); err != nil {
		return nil, err
	}
	if err := s.configure(ctx, opts, providerCAs); err != nil {
		return nil, err
	}
	if s.neighbour != nil {
		if err := s.neighbour.startNeighbour(ctx, s); err != nil {
			return nil, fmt.Errorf("%s's deployment: %w", s.neighbour.tenant.org, err)
		}
	}
	return s, nil
}

// systemDir makes a new temporary folder for a deployment's logs and
// stores, named after name. It is removed when t ends, unless t failed or
// envKeep is set, so that a failure can be looked into.
func systemDir(t testing.TB, name string) (string, error) {
	dir, err := os.MkdirTemp("", "chaos-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("temporary folder: %w", err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv(envKeep) != "" {
			t.Logf("logs and stores kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir, nil
}

// newSystem returns tenant tn's deployment, with its files in dir, to be
// started; every process it starts is stopped when t ends.
func newSystem(t testing.TB, dir, bin string, tn tenant) *system {
	s := &system{tenant: tn, dir: dir, bin: bin, members: map[string]memberSeen{}, http: &http.Client{}}
	s.toolLog = filepath.Join(s.dir, "pushctl.log")
	showLogsOnFailure(t, s.procs, s.toolLog)
	t.Cleanup(s.stop)
	return s
}

// stop stops every process and closes the connections, the cuts and the
// provider.
func (s *system) stop() {
	// Stop the clients first so that the servers' deaths are not news.
	var wg sync.WaitGroup
	for _, p := range s.procs() {
		wg.Go(p.retire)
	}
	wg.Wait()
	if s.nc != nil {
		s.nc.Close()
	}
	for _, c := range s.cuts {
		c.close()
	}
	for _, c := range s.routeCuts {
		c.close()
	}
	if s.balancer != nil {
		s.balancer.close()
	}
	if s.provider != nil {
		s.provider.close()
	}
}

// trustRelay has the deployment's clients of a relay (its dispatchers,
// and the test's reads) trust the certificates that caFile signed.
func (s *system) trustRelay(caFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("the relay's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("the relay's CA %s holds no certificate", caFile)
	}
	s.relayCA = caFile
	s.http = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	return nil
}

// relayURL is the URL of path at the relay at addr: https when it serves
// TLS.
func (s *system) relayURL(addr, path string) string {
	if s.relayCerts != nil {
		return "https://" + addr + path
	}
	return "http://" + addr + path
}

// relayClientEnv is the environment of a process that reaches the relay:
// it trusts the relay's CA, when the relay serves TLS.
func (s *system) relayClientEnv() []string {
	if s.relayCA == "" {
		return nil
	}
	return []string{"SSL_CERT_FILE=" + s.relayCA}
}

// startNeighbour starts s, a neighbour's deployment of one node, ingest
// and one dispatcher, and sets it up to push through relay's relay.
func (s *system) startNeighbour(ctx context.Context, relay *system) error {
	if relay.relayCA != "" {
		if err := s.trustRelay(relay.relayCA); err != nil {
			return err
		}
	}
	if err := s.startCluster(ctx, 1, false); err != nil {
		return err
	}
	cer, err := s.provision(ctx, 1, 0)
	if err != nil {
		return err
	}
	if err := s.enableProxy(ctx, relay, cer); err != nil {
		return err
	}
	return s.startDaemons(ctx, systemOptions{dispatchers: 1})
}

// node is the data of one nats-server configuration file.
type node struct {
	Name                                 string
	ClientPort, ClusterPort, MonitorPort int
	StoreDir                             string
	// Routes are the route URLs the node dials; Advertise, when set, is
	// the cluster address it tells the others.
	Routes    []string
	Advertise string
}

// route is the route node from dials to node to.
type route struct{ from, to int }

// startCluster writes the configurations of n nodes (one has no cluster
// block), starts them and waits until JetStream answers. With routeCuts, each node dials every
// other through a netCut of its own, and advertises an address where
// nothing listens: a node that learns of another from a third dials it
// only through the cut (an implicit route to that address fails).
func (s *system) startCluster(ctx context.Context, n int, routeCuts bool) error {
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "nats-server.conf.tmpl"))
	if err != nil {
		return fmt.Errorf("nats-server configuration template: %w", err)
	}
	// The clients', the routes', the monitors' ports, and one where
	// nothing listens.
	ports, err := nettest.FreePorts(3*n + 1)
	if err != nil {
		return err
	}
	clusterAddr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[n+i]) }
	// routeAddr is where node from dials node to.
	routeAddr := func(from, to int) string { return clusterAddr(to) }
	advertise := ""
	if routeCuts {
		s.routeCuts = map[route]*netCut{}
		for from := range n {
			for to := range n {
				if from == to {
					continue
				}
				c, err := newNetCut([]string{clusterAddr(to)})
				if err != nil {
					return err
				}
				s.routeCuts[route{from, to}] = c
			}
		}
		routeAddr = func(from, to int) string { return s.routeCuts[route{from, to}].addrs[0] }
		advertise = "127.0.0.1:" + strconv.Itoa(ports[3*n])
	}
	routes := func(from int) []string {
		var out []string
		for to := range n {
			if to != from {
				out = append(out, "nats-route://"+routeAddr(from, to))
			}
		}
		return out
	}
	var urls []string
	for i := range n {
		nd := node{
			Name:        fmt.Sprintf("n%d", i+1),
			ClientPort:  ports[i],
			ClusterPort: ports[n+i],
			MonitorPort: ports[2*n+i],
			StoreDir:    filepath.Join(s.dir, fmt.Sprintf("n%d-store", i+1)),
			Routes:      routes(i),
			Advertise:   advertise,
		}
		conf := filepath.Join(s.dir, nd.Name+".conf")
		f, err := os.Create(conf)
		if err != nil {
			return fmt.Errorf("writing %s: %w", conf, err)
		}
		err = tmpl.Execute(f, nd)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", conf, err)
		}
		s.nodes = append(s.nodes, newProc(nd.Name, filepath.Join(s.bin, "nats-server"), s.dir, []string{"-c", conf}, nil))
		s.nodeNames = append(s.nodeNames, nd.Name)
		s.clientPorts = append(s.clientPorts, nd.ClientPort)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.ClientPort))
	}
	s.natsURLs = strings.Join(urls, ",")
	for _, p := range s.nodes {
		if err := p.start(); err != nil {
			return err
		}
	}
	for i := range s.nodes {
		if err := s.waitNodeListening(ctx, i); err != nil {
			return err
		}
	}
	s.nc, err = nats.Connect(s.natsURLs, nats.Name("chaos-test"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return fmt.Errorf("connecting to the cluster: %w", err)
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := s.nc.Subscribe(membersSubject, s.heard); err != nil {
		return fmt.Errorf("subscribing to %s: %w", membersSubject, err)
	}
	return waitUntil(ctx, "JetStream in the cluster", 60*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := s.js.AccountInfo(actx)
		return err == nil, err
	})
}

// heard records a dispatcher heartbeat.
func (s *system) heard(m *nats.Msg) {
	var a struct {
		ID      string `json:"id"`
		Leaving bool   `json:"leaving"`
		Owns    []int  `json:"owns"`
	}
	if json.Unmarshal(m.Data, &a) != nil || a.ID == "" {
		return
	}
	s.mu.Lock()
	s.members[a.ID] = memberSeen{owns: a.Owns, at: time.Now()}
	s.mu.Unlock()
}

// owned returns the partitions dispatcher id announced last, if any.
func (s *system) owned(id string) []int {
	owns, _ := s.ownedSince(id, time.Time{})
	return owns
}

// ownedSince returns the partitions dispatcher id announced last, and
// whether that announcement came after t.
func (s *system) ownedSince(id string, t time.Time) ([]int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[id]
	return append([]int(nil), m.owns...), m.at.After(t)
}

// waitNodeListening waits until node i accepts TCP connections.
func (s *system) waitNodeListening(ctx context.Context, i int) error {
	p := s.nodes[i]
	addr := fmt.Sprintf("127.0.0.1:%d", s.clientPorts[i])
	return waitUntil(ctx, p.name+" to listen", 30*time.Second, 50*time.Millisecond, func(context.Context) (bool, error) {
		if !p.running() {
			return false, fmt.Errorf("%s is not running: %s", p.name, p.tail(5))
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err
		}
		c.Close()
		return true, nil
	})
}

// pushctl runs pushctl against the cluster.
func (s *system) pushctl(ctx context.Context, args ...string) (string, error) {
	return runTool(ctx, s.toolLog, filepath.Join(s.bin, "pushctl"), append(args, "--nats-url", s.natsURLs)...)
}

// daemonArgs are the flags every daemon gets.
func (s *system) daemonArgs(httpAddr string, more ...string) []string {
	return daemonArgs(s.natsURLs, httpAddr, more...)
}

// daemonArgs are the flags of a daemon that reaches NATS at natsURLs.
func daemonArgs(natsURLs, httpAddr string, more ...string) []string {
	return append([]string{"--nats-url", natsURLs, "--http-addr", httpAddr, "--log-format", "json"}, more...)
}

// configure provisions the layout with 3 replicas, sets up S2S auth,
// starts the relay (trusting the providers' certificates in providerCAs),
// registers the organization's partner and app with it, enables the proxy,
// and starts the daemons.
func (s *system) configure(ctx context.Context, opts systemOptions, providerCAs []string) error {
	cer, err := s.provision(ctx, nodeCount, opts.partitions)
	if err != nil {
		return err
	}
	if err := s.startRelays(ctx, opts, providerCAs); err != nil {
		return err
	}
	if opts.monitor {
		if _, err := s.pushctl(ctx, "relay", "app", "add", "--app-id", canaryApp, "--provider", "log"); err != nil {
			return err
		}
	}
	if err := s.enableProxy(ctx, s, cer); err != nil {
		return err
	}
	return s.startDaemons(ctx, opts)
}

// provision provisions the layout with replicas replicas (and partitions
// partitions, provisioning's default when 0), creates the organization's
// S2S certificate and returns the file its public part was exported to.
func (s *system) provision(ctx context.Context, replicas, partitions int) (string, error) {
	certDir, cer := filepath.Join(s.dir, "auth"), filepath.Join(s.dir, "OAuthCert.cer")
	provision := []string{"provision", "--replicas", strconv.Itoa(replicas)}
	if partitions > 0 {
		provision = append(provision, "--partitions", strconv.Itoa(partitions))
	}
	steps := [][]string{
		provision,
		{"auth", "new-certificate", "--domain", s.tenant.org, "--out", certDir},
		{"auth", "export", "--out", cer},
	}
	for _, args := range steps {
		if _, err := s.pushctl(ctx, args...); err != nil {
			return "", err
		}
	}
	return cer, nil
}

// enableProxy registers s's organization (its S2S certificate cer) and its
// app with the relay of deployment relay, the way that relay's operator
// would, and enables s's push notification proxy toward it.
func (s *system) enableProxy(ctx context.Context, relay *system, cer string) error {
	appAdd := []string{"relay", "app", "add", "--app-id", s.tenant.app, "--provider", "apns", "--apns-key-file", s.provider.keyP8,
		"--apns-key-id", apnsKeyID, "--apns-team-id", apnsTeamID, "--apns-topic", s.tenant.app,
		"--apns-environment", "sandbox", "--apns-host", s.provider.url()}
	// Newer relays bind an app to the organizations allowed to use it.
	help, _ := runTool(ctx, s.toolLog, filepath.Join(s.bin, "pushctl"), "relay", "app", "add", "--help")
	if strings.Contains(help, "--organization") {
		appAdd = append(appAdd, "--organization", s.tenant.org)
	}
	for _, args := range [][]string{{"relay", "partner", "add", "--organization", s.tenant.org, "--certificate", cer}, appAdd} {
		if _, err := relay.pushctl(ctx, args...); err != nil {
			return err
		}
	}
	_, err := s.pushctl(ctx, "proxy", "enable", "--organization", s.tenant.org, "--uri", relay.relayURL(relay.relayAddr, "/PushNotifications"))
	return err
}

// startDaemons starts ingest, the dispatchers and, with opts.monitor, the
// monitor, and waits until each is ready.
func (s *system) startDaemons(ctx context.Context, opts systemOptions) error {
	dispatchers := opts.dispatcherCount()
	// Ingest, each dispatcher, the monitor, then each dispatcher's
	// profiles.
	ports, err := nettest.FreePorts(2 + 2*dispatchers)
	if err != nil {
		return err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	s.ingestAddr = addr(0)
	s.ingest = newProc("ingest", filepath.Join(s.bin, "ingest"), s.dir,
		s.daemonArgs(s.ingestAddr, "--native-token", ingestToken), nil)
	if err := s.startIngest(ctx); err != nil {
		return err
	}
	for i := range dispatchers {
		a, debug := addr(1+i), addr(2+dispatchers+i)
		s.dispatcherAddrs = append(s.dispatcherAddrs, a)
		s.dispatcherDebugAddrs = append(s.dispatcherDebugAddrs, debug)
		natsURLs := s.natsURLs
		if opts.netCuts {
			c, err := newNetCut(s.clientAddrs())
			if err != nil {
				return err
			}
			s.cuts = append(s.cuts, c)
			natsURLs = c.natsURLs()
		}
		s.dispatchers = append(s.dispatchers, newProc(dispatcherID(i), filepath.Join(s.bin, "dispatcher"), s.dir,
			daemonArgs(natsURLs, a, "--instance-id", dispatcherID(i), "--debug-addr", debug), s.relayClientEnv()))
		if err := s.dispatchers[i].start(); err != nil {
			return err
		}
	}
	for i := range dispatchers {
		if err := s.waitDispatcher(ctx, i); err != nil {
			return err
		}
	}
	if opts.monitor {
		monitorAddr := addr(1 + dispatchers)
		s.monitor = newProc("monitor", filepath.Join(s.bin, "monitor"), s.dir,
			s.daemonArgs(monitorAddr, "--ingest-url", "http://"+s.ingestAddr, "--ingest-token", ingestToken,
				"--probe-interval", "15s", "--canary-interval", "15s"), nil)
		if err := s.monitor.start(); err != nil {
			return err
		}
		if err := httpReady(ctx, s.http, s.monitor, "http://"+monitorAddr+"/readyz", time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// concatFiles writes the contents of files, one after the other, to path.
func concatFiles(path string, files []string) error {
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading %s: %w", f, err)
		}
		all = append(all, b...)
	}
	if err := os.WriteFile(path, all, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// clientAddrs are the nodes' client addresses.
func (s *system) clientAddrs() []string {
	out := make([]string, len(s.clientPorts))
	for i, p := range s.clientPorts {
		out[i] = "127.0.0.1:" + strconv.Itoa(p)
	}
	return out
}

func dispatcherID(i int) string { return fmt.Sprintf("dispatcher-%d", i+1) }

// startRelays starts the relay (trusting the providers' certificates in
// providerCAs), or opts.relayReplicas replicas of it behind a balancer,
// and waits until they are ready.
func (s *system) startRelays(ctx context.Context, opts systemOptions, providerCAs []string) error {
	replicas := max(opts.relayReplicas, 1)
	ports, err := nettest.FreePorts(replicas + 1)
	if err != nil {
		return err
	}
	caFile := filepath.Join(s.dir, "providers-ca.pem")
	if err := concatFiles(caFile, providerCAs); err != nil {
		return err
	}
	for i := range replicas {
		name := "relay"
		if replicas > 1 {
			name = fmt.Sprintf("relay-%d", i+1)
		}
		addr := "127.0.0.1:" + strconv.Itoa(ports[i])
		s.relayAddrs = append(s.relayAddrs, addr)
		args := []string{"--host", "127.0.0.1", "--replicas", "3"}
		if s.relayCerts != nil {
			args = append(args, "--tls-cert", s.relayCerts.ServerCert, "--tls-key", s.relayCerts.ServerKey)
		}
		s.relays = append(s.relays, newProc(name, filepath.Join(s.bin, "relay"), s.dir,
			s.daemonArgs(addr, append(args, opts.relayArgs...)...),
			[]string{"SSL_CERT_FILE=" + caFile}))
		if err := s.startRelay(ctx, i); err != nil {
			return err
		}
	}
	s.relay, s.relayAddr = s.relays[0], s.relayAddrs[0]
	if replicas > 1 {
		s.relayAddr = "127.0.0.1:" + strconv.Itoa(ports[replicas])
		if s.balancer, err = newBalancer(s.relayAddr, s.relayAddrs); err != nil {
			return fmt.Errorf("the relays' balancer: %w", err)
		}
	}
	return nil
}

// startRelay starts relay replica i and waits until it is ready.
func (s *system) startRelay(ctx context.Context, i int) error {
	if err := s.relays[i].start(); err != nil {
		return err
	}
	return httpReady(ctx, s.http, s.relays[i], s.relayURL(s.relayAddrs[i], "/readyz"), time.Minute)
}

// startIngest starts ingest and waits until it is ready.
func (s *system) startIngest(ctx context.Context) error {
	if err := s.ingest.start(); err != nil {
		return err
	}
	return httpReady(ctx, s.http, s.ingest, "http://"+s.ingestAddr+"/readyz", time.Minute)
}

// startDispatcher starts dispatcher i again.
func (s *system) startDispatcher(ctx context.Context, i int) error {
	if err := s.dispatchers[i].start(); err != nil {
		return err
	}
	return s.waitDispatcher(ctx, i)
}

func (s *system) waitDispatcher(ctx context.Context, i int) error {
	return httpReady(ctx, s.http, s.dispatchers[i], "http://"+s.dispatcherAddrs[i]+"/readyz", time.Minute)
}

// mailLeader returns the index of the node leading the MAIL stream.
func (s *system) mailLeader(ctx context.Context) (int, error) {
	var leader string
	err := waitUntil(ctx, "a MAIL stream leader", time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		info, err := s.streamInfo(ctx, streamMail)
		if err != nil {
			return false, err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return false, errors.New("no leader")
		}
		leader = info.Cluster.Leader
		return true, nil
	})
	if err != nil {
		return 0, err
	}
	for i, n := range s.nodeNames {
		if n == leader {
			return i, nil
		}
	}
	return 0, fmt.Errorf("MAIL leader %q is not a node of the cluster", leader)
}

func (s *system) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", name, err)
	}
	return info, nil
}

// waitStreamsCurrent waits until MAIL has a leader and every replica is
// current, e.g. after a node came back.
func (s *system) waitStreamsCurrent(ctx context.Context, timeout time.Duration) error {
	return waitUntil(ctx, "MAIL replicas to be current", timeout, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		info, err := s.streamInfo(ctx, streamMail)
		if err != nil {
			return false, err
		}
		c := info.Cluster
		if c == nil || c.Leader == "" || len(c.Replicas) != len(s.nodes)-1 {
			return false, fmt.Errorf("cluster %+v", c)
		}
		for _, r := range c.Replicas {
			if !r.Current || r.Offline {
				return false, fmt.Errorf("replica %s not current", r.Name)
			}
		}
		return true, nil
	})
}

// isolate cuts node i off from the other nodes, both ways, through the
// route cuts; its clients still reach it.
func (s *system) isolate(i int) {
	for _, c := range s.nodeRoutes(i) {
		c.cut(bothWays)
	}
}

// rejoin heals the cuts isolate made.
func (s *system) rejoin(i int) {
	for _, c := range s.nodeRoutes(i) {
		c.heal()
	}
}

// nodeRoutes are the route cuts of the routes node i dials or is dialled
// on.
func (s *system) nodeRoutes(i int) []*netCut {
	var out []*netCut
	for r, c := range s.routeCuts {
		if r.from == i || r.to == i {
			out = append(out, c)
		}
	}
	return out
}

// restartNode starts node i again and waits until it accepts clients.
func (s *system) restartNode(ctx context.Context, i int) error {
	if err := s.nodes[i].start(); err != nil {
		return err
	}
	return s.waitNodeListening(ctx, i)
}

// dispatcherMetrics are the dispatcher counters the report shows, summed
// over the dispatchers alive at the end (a killed one's counters are gone
// with it).
var dispatcherMetrics = []string{
	"go_gc_duration_seconds_count",
	"pushproxy_dispatcher_partition_takeovers_total",
	"pushproxy_dispatcher_takeover_seconds_sum",
	"pushproxy_dispatcher_takeover_seconds_count",
	"pushproxy_dispatcher_events_redelivered_total",
	"pushproxy_dispatcher_state_conflicts_total",
	"pushproxy_dispatcher_missed_deliveries_total",
	"pushproxy_dispatcher_gap_events_read_total",
	"pushproxy_dispatcher_gap_leader_reads_total",
	"pushproxy_dispatcher_gap_stale_states_total",
	"pushproxy_dispatcher_stalls_total",
	"pushproxy_dispatcher_dead_letters_total",
	"pushproxy_dispatcher_devices_removed_total",
	"pushproxy_dispatcher_relay_retries_total",
	"pushproxy_dispatcher_pushes_total",
	"pushproxy_dispatcher_relay_requests_total",
}

// scrapeDispatchers sums dispatcherMetrics over the live dispatchers.
func (s *system) scrapeDispatchers(ctx context.Context) map[string]float64 {
	sums := map[string]float64{}
	for i, p := range s.dispatchers {
		if !p.running() {
			continue
		}
		samples, err := scrape(ctx, s.http, "http://"+s.dispatcherAddrs[i]+"/metrics", dispatcherMetrics...)
		if err != nil {
			continue
		}
		for _, m := range samples {
			sums[strings.TrimPrefix(m.name, "pushproxy_dispatcher_")] += m.value
		}
	}
	return sums
}

// sample is one series of a Prometheus text exposition: its metric name,
// its labels as written ({a="b",...}, or ""), and its value.
type sample struct {
	name, labels string
	value        float64
}

// scrape reads the series of the metrics named names from url with
// client.
func scrape(ctx context.Context, client *http.Client, url string, names ...string) ([]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, name := range names {
			rest, ok := strings.CutPrefix(line, name)
			if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
				continue
			}
			end := strings.LastIndex(rest, "}") + 1
			fields := strings.Fields(rest[end:])
			if len(fields) == 0 {
				continue
			}
			if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
				out = append(out, sample{name: name, labels: rest[:end], value: v})
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	return out, nil
}
