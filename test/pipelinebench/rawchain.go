package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushproxy/pushproxy/internal/benchtest"
	"github.com/pushproxy/pushproxy/internal/benchtest/bareingest"
	"github.com/pushproxy/pushproxy/internal/benchtest/forward"
	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/httpx"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/relay"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// The raw chain is the whole pipeline's anchor: the raw stages that make
// bench measures each of pushproxy's stages against, chained in one
// process as pushctl standalone chains pushproxy's, and offered the same
// load by the same bench:
//
//   - ingest's anchor (internal/benchtest/bareingest): a bare net/http
//     handler that decodes each event's user and change id with
//     encoding/json and publishes the event to the MAIL stream with its
//     Nats-Msg-Id, synchronously for one event, as asynchronous publishes
//     awaited together for a batch;
//   - the MAIL stream and its partitions as broker.Provision makes them
//     (the same layout, duplicate window and storage as the pipeline's);
//   - the dispatcher's anchor: one plain durable pull consumer per
//     partition with explicit acks, acknowledging each event once its push
//     was answered;
//   - between them, the dispatcher's sender settings: requests of up to
//     dispatcher.DefaultBatchSize notifications, gathered for at most
//     dispatcher.DefaultBatchLinger, dispatcher.DefaultMaxInFlight at once,
//     sent by the dispatcher's relay client with S2S tokens;
//   - the relay's anchor (internal/benchtest/forward): a bare HTTPS handler
//     that posts each badge to the provider over HTTP/2, an
//     organization+app's share of sends at once.
//
// It keeps no per-user state, does not coalesce, order, retry or
// dead-letter, reads no device (user u's device token is derived from its
// name, benchtest.DeviceToken, as the benches make them) and exports only
// Go's runtime metrics: everything pushproxy does beyond moving the bytes.
//
// By default every stage runs in one process on an embedded server, as
// make bench runs it. With -nats-url and -parts, each stage can run in a
// process of its own on a cluster, as test/chaos's cluster latency bench
// runs it; a relay stage alone serves plain HTTP, as that cluster's relay
// does.

// rawChainCommand is the bench's own argument that runs the raw chain
// instead of the bench (the bench starts itself with it).
const rawChainCommand = "rawchain"

// rawChainBanner is what the raw chain prints once it takes events.
const rawChainBanner = "raw chain ready"

// rawChainConfig is what the raw chain's flags fill.
type rawChainConfig struct {
	dataDir, natsURL, httpAddr, debugAddr string
	// parts are the stages this process runs (rawParts when all).
	parts []string
	// partitions are the MAIL partitions the dispatch stage consumes (all
	// when empty); relayURL where it sends without a relay stage here.
	partitions []int
	relayURL   string
	// providerURL, providerCA and providerAuth are the relay stage's push
	// service, the CA its certificate is trusted by, and the
	// Authorization header of every send; app is the devices' app in the
	// dispatch stage's notifications (the relay stage's APNs topic).
	providerURL, providerCA, providerAuth, app string
}

// The raw chain's stages, which -parts chooses from.
const (
	partIngest   = "ingest"
	partDispatch = "dispatch"
	partRelay    = "relay"
)

// rawParts are all the stages, chained in one process by default.
var rawParts = []string{partIngest, partDispatch, partRelay}

// runs reports whether the process runs stage part.
func (c rawChainConfig) runs(part string) bool { return slices.Contains(c.parts, part) }

// rawChainMain runs the raw chain with args (after rawChainCommand) until
// it is interrupted, and returns the process's exit code.
func rawChainMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseRawChainConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "pipelinebench %s: %v\n", rawChainCommand, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runRawChain(ctx, cfg, stdout); err != nil {
		fmt.Fprintf(stderr, "pipelinebench %s: %v\n", rawChainCommand, err)
		return 1
	}
	return 0
}

// parseRawChainConfig reads the raw chain's flags from args and checks
// that they fit together.
func parseRawChainConfig(args []string, stderr io.Writer) (rawChainConfig, error) {
	cfg := rawChainConfig{app: benchTopic}
	var parts, partitions string
	fs := flag.NewFlagSet("pipelinebench "+rawChainCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pipelinebench %s [flags]\n\nRuns the whole pipeline's anchor, the chain of raw stages the bench compares pushctl standalone with (see rawchain.go), until interrupted. "+
			"The bench starts it itself, with every stage in one process on an embedded NATS server; test/chaos's cluster latency bench starts one process per stage (-parts) on its 3-node cluster (-nats-url).\n\n", rawChainCommand)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.dataDir, "data-dir", "", "folder of the embedded NATS server's data (required without -nats-url)")
	fs.StringVar(&cfg.natsURL, "nats-url", "", "NATS servers to connect to (comma-separated) instead of an embedded server; MAIL must be provisioned (pushctl provision)")
	fs.StringVar(&cfg.httpAddr, "http-addr", "127.0.0.1:0", "address of /metrics and /readyz, of the events API (POST /v1/events) with the ingest stage, and of the relay's publish path over plain HTTP with the relay stage but not the dispatch stage")
	fs.StringVar(&cfg.debugAddr, "debug-addr", "", "address of Go's profiles (/debug/pprof/), none when empty")
	fs.StringVar(&parts, "parts", strings.Join(rawParts, ","), "the stages this process runs, comma-separated: ingest, dispatch, relay; the dispatch stage sends to a relay stage in the same process over HTTPS")
	fs.StringVar(&partitions, "partitions", "", "the MAIL partitions the dispatch stage consumes, comma-separated (default: all)")
	fs.StringVar(&cfg.relayURL, "relay-url", "", "the relay stage's base URL (http://host:port"+relay.DefaultBasePath+"), for a dispatch stage without a relay stage in the process")
	fs.StringVar(&cfg.providerURL, "provider", "", "the APNs provider's base URL (required with the relay stage)")
	fs.StringVar(&cfg.providerCA, "provider-ca-file", "", "PEM file of the certificate authority the provider's certificate is trusted by (required with the relay stage)")
	fs.StringVar(&cfg.providerAuth, "provider-authorization", "", "the Authorization header of every send to the provider (\"bearer <JWT>\"), none when empty")
	fs.StringVar(&cfg.app, "app", cfg.app, "the devices' app in the dispatch stage's notifications, the relay stage's APNs topic")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, part := range strings.Split(parts, ",") {
		part = strings.TrimSpace(part)
		if !slices.Contains(rawParts, part) {
			return cfg, fmt.Errorf("-parts: %q is not one of %s", part, strings.Join(rawParts, ", "))
		}
		cfg.parts = append(cfg.parts, part)
	}
	n := broker.DefaultLayout().Partitions
	for _, f := range strings.Split(partitions, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 0 || p >= n {
			return cfg, fmt.Errorf("-partitions: %q is not a partition (0 to %d)", f, n-1)
		}
		cfg.partitions = append(cfg.partitions, p)
	}
	switch {
	case cfg.natsURL == "" && cfg.dataDir == "":
		return cfg, errors.New("-data-dir or -nats-url is required")
	case cfg.runs(partRelay) && (cfg.providerURL == "" || cfg.providerCA == ""):
		return cfg, errors.New("the relay stage needs -provider and -provider-ca-file")
	case cfg.runs(partDispatch) && !cfg.runs(partRelay) && cfg.relayURL == "":
		return cfg, errors.New("a dispatch stage without the relay stage needs -relay-url")
	}
	return cfg, nil
}

// rawChain is the running chain.
type rawChain struct {
	relay    *relayclient.Client
	relayURL string
	app      string
	// queue takes the consumers' deliveries to the senders.
	queue chan jetstream.Msg
	// since is every device's subscription time.
	since time.Time

	// failOnce reports only the chain's first error.
	failOnce sync.Once
}

// runRawChain starts the stages cfg names, prints rawChainBanner and
// serves until ctx ends.
func runRawChain(ctx context.Context, cfg rawChainConfig, stdout io.Writer) error {
	opts := broker.Options{Name: "pipelinebench raw chain", Embedded: true, StoreDir: cfg.dataDir}
	if cfg.natsURL != "" {
		opts = broker.Options{Name: "pipelinebench raw chain " + strings.Join(cfg.parts, ","), URLs: strings.Split(cfg.natsURL, ",")}
	}
	conn, err := broker.Connect(ctx, opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	layout := broker.DefaultLayout()
	if cfg.natsURL == "" {
		if err := broker.Provision(ctx, conn.JS, layout); err != nil {
			return err
		}
	}
	js, err := jetstream.New(conn.NC, jetstream.WithPublishAsyncMaxPending(ingest.DefaultMaxPending))
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	c := &rawChain{relayURL: cfg.relayURL, app: cfg.app, since: time.Now().UTC(), queue: make(chan jetstream.Msg, dispatcher.DefaultFetchBatch)}
	api := http.NewServeMux()
	if cfg.runs(partIngest) {
		keyer, err := broker.Keyer(ctx, conn.JS)
		if err != nil {
			return err
		}
		api.Handle("POST /v1/events", &bareingest.Handler{JS: js, Subject: func(user string) string { return keyer.Subject(benchOrg, user) }})
	}
	var relayRoots *x509.CertPool
	if cfg.runs(partRelay) {
		providerRoots, err := relay.ProviderRoots(cfg.providerCA)
		if err != nil {
			return err
		}
		fc := forward.Config{Push: cfg.providerURL, Client: httpx.NewClient(httpx.ClientConfig{HTTP2Only: true, RootCAs: providerRoots}),
			Slots: relay.DefaultProviderConcurrent / 4, Path: relay.DefaultBasePath + relayproto.PublishPath, Authorization: cfg.providerAuth}
		if cfg.runs(partDispatch) {
			fwd := forward.Start(fc)
			defer fwd.Close()
			c.relayURL, relayRoots = fwd.URL()+relay.DefaultBasePath, fwd.Roots()
		} else {
			// Alone, as test/chaos's relay serves: plain HTTP.
			api.Handle(fc.Path, forward.New(fc))
		}
	}
	if cfg.runs(partDispatch) {
		stop, err := c.dispatch(ctx, conn.JS, cfg.partitions, relayRoots)
		if err != nil {
			return err
		}
		defer stop()
	}
	stopServers, err := c.serve(cfg, api)
	if err != nil {
		return err
	}
	defer stopServers()
	fmt.Fprintln(stdout, rawChainBanner)
	<-ctx.Done()
	return nil
}

// dispatch consumes partitions (all when empty) with one plain durable
// consumer each and starts the senders; the function it returns stops
// them.
func (c *rawChain) dispatch(ctx context.Context, js jetstream.JetStream, partitions []int, relayRoots *x509.CertPool) (func(), error) {
	issuer, err := rawChainIssuer()
	if err != nil {
		return nil, err
	}
	c.relay = relayclient.New(relayclient.Config{Tokens: issuer, BreakerFailures: -1,
		HTTPClient: httpx.NewClient(httpx.ClientConfig{Timeout: relayclient.DefaultTimeout, MaxIdleConnsPerHost: 32, NoRedirects: true, RootCAs: relayRoots})})
	if len(partitions) == 0 {
		for p := range broker.DefaultLayout().Partitions {
			partitions = append(partitions, p)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	var senders sync.WaitGroup
	var consumers []jetstream.ConsumeContext
	stop := func() {
		for _, cc := range consumers {
			cc.Stop()
		}
		cancel()
		senders.Wait()
	}
	for _, p := range partitions {
		cons, err := js.CreateOrUpdateConsumer(ctx, broker.StreamMail, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("raw-p%d", p), FilterSubject: broker.PartitionFilter(p),
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: dispatcher.DefaultMaxAckPending,
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("creating the consumer of partition %d: %w", p, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case c.queue <- m:
			case <-ctx.Done():
			}
		}, jetstream.PullMaxMessages(dispatcher.DefaultFetchBatch))
		if err != nil {
			stop()
			return nil, fmt.Errorf("consuming partition %d: %w", p, err)
		}
		consumers = append(consumers, cc)
	}
	for range dispatcher.DefaultMaxInFlight {
		senders.Go(func() { c.send(ctx) })
	}
	return stop, nil
}

// serve serves api with /metrics and /readyz and, with cfg.debugAddr,
// Go's profiles; the function it returns stops them.
func (c *rawChain) serve(cfg rawChainConfig, api *http.ServeMux) (func(), error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	api.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	api.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ready\n") })
	servers := []*http.Server{{Addr: cfg.httpAddr, Handler: api, ReadHeaderTimeout: 10 * time.Second}}
	if cfg.debugAddr != "" {
		debug := http.NewServeMux()
		debug.HandleFunc("/debug/pprof/", pprof.Index)
		debug.HandleFunc("/debug/pprof/profile", pprof.Profile)
		servers = append(servers, &http.Server{Addr: cfg.debugAddr, Handler: debug, ReadHeaderTimeout: 10 * time.Second})
	}
	for i, srv := range servers {
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			for _, started := range servers[:i] {
				_ = started.Close()
			}
			return nil, fmt.Errorf("listening on %s: %w", srv.Addr, err)
		}
		go func() { _ = srv.Serve(ln) }()
	}
	return func() {
		for _, srv := range servers {
			_ = srv.Close()
		}
	}, nil
}

// rawEvent is what the raw chain reads of an event.
type rawEvent struct {
	User     string `json:"user"`
	Unread   int    `json:"unread"`
	ChangeID string `json:"change_id"`
}

// send takes deliveries off the queue in batches, pushes each batch
// through the forwarder and acknowledges it, until ctx ends. A batch that
// fails is left unacknowledged, to be delivered again.
func (c *rawChain) send(ctx context.Context) {
	batch := make([]jetstream.Msg, 0, dispatcher.DefaultBatchSize)
	notes := make([]relayproto.Notification, 0, dispatcher.DefaultBatchSize)
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-c.queue:
			batch = append(batch[:0], m)
		}
		linger := time.NewTimer(dispatcher.DefaultBatchLinger)
	gather:
		for len(batch) < cap(batch) {
			select {
			case m := <-c.queue:
				batch = append(batch, m)
			case <-linger.C:
				break gather
			}
		}
		linger.Stop()
		notes = notes[:0]
		for _, m := range batch {
			n, err := c.notification(m)
			if err != nil {
				c.fail(err)
				continue
			}
			notes = append(notes, n)
		}
		resp, err := c.relay.Publish(ctx, c.relayURL, notes)
		if err != nil {
			c.fail(err)
			continue
		}
		c.checkDelivered(resp)
		for _, m := range batch {
			_ = m.Ack()
		}
	}
}

// notification is the push of one stored event: its count to its user's
// device.
func (c *rawChain) notification(m jetstream.Msg) (relayproto.Notification, error) {
	var e rawEvent
	if err := json.Unmarshal(m.Data(), &e); err != nil {
		return relayproto.Notification{}, fmt.Errorf("decoding a stored event: %w", err)
	}
	u, ok := benchtest.UserNumber(e.User)
	if !ok {
		return relayproto.Notification{}, fmt.Errorf("user %q is not one of the bench's", e.User)
	}
	return relayproto.Notification{
		ID:         e.ChangeID,
		Payload:    relayproto.Payload{TenantID: benchOrg, UnseenEmailCount: e.Unread, BackgroundSyncType: relayproto.BackgroundSyncEmail},
		Recipients: []relayproto.Recipient{{AppID: c.app, DeviceID: benchtest.DeviceToken(u), LastSubscriptionUpdate: c.since}},
	}, nil
}

// checkDelivered reports a device the relay stage did not deliver to (the
// chain acknowledges its event all the same: the bench finds the badge
// missing).
func (c *rawChain) checkDelivered(resp relayproto.Response) {
	for _, n := range resp.Results {
		for _, d := range n.Devices {
			if d.Outcome() != relayproto.ClassDelivered {
				c.fail(fmt.Errorf("notification %s to device %s: %s", n.ID, d.DeviceID, d.Outcome()))
				return
			}
		}
	}
}

// fail reports the chain's first error on its standard error.
func (c *rawChain) fail(err error) {
	c.failOnce.Do(func() {
		fmt.Fprintf(os.Stderr, "raw chain: %v (the first error; the event is delivered again after the ack wait)\n", err)
	})
}

// rawChainIssuer issues S2S tokens as a dispatcher does, with a
// certificate of its own (the forwarder checks no token).
func rawChainIssuer() (*tokens.Issuer, error) {
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: benchOrg})
	if err != nil {
		return nil, fmt.Errorf("making the S2S certificate: %w", err)
	}
	issuer, err := tokens.NewIssuer(cert, tokens.IssuerOptions{IssuerID: "pipelinebench", Realm: "pipelinebench", PrincipalID: "pipelinebench", Host: "127.0.0.1"})
	if err != nil {
		return nil, fmt.Errorf("making the S2S token issuer: %w", err)
	}
	return issuer, nil
}

// startRawChain starts the raw chain as a process of its own (this
// bench's binary with rawChainCommand), with its data in dataDir and its
// output in logDir, sending to prov.
func startRawChain(ctx context.Context, dataDir, logDir string, pprof bool, prov *provider) (*process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the bench's binary: %w", err)
	}
	ports, err := nettest.FreePorts(2)
	if err != nil {
		return nil, err
	}
	httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	pprofAddr := ""
	args := []string{rawChainCommand, "-data-dir", dataDir, "-http-addr", httpAddr, "-provider", prov.url(), "-provider-ca-file", prov.caFile}
	if pprof {
		pprofAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
		args = append(args, "-debug-addr", pprofAddr)
	}
	return startProcess(ctx, processOptions{name: "the raw chain", bin: self, args: args, logDir: logDir, logName: "rawchain",
		banner: rawChainBanner, ingestAddr: httpAddr, pprofAddr: pprofAddr})
}
