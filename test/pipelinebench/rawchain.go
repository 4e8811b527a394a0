package main

import (
	"context"
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushproxy/pushproxy/internal/benchtest/bareingest"
	"github.com/pushproxy/pushproxy/internal/benchtest/forward"
	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/events"
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
// name, as the bench makes them) and exports only Go's runtime metrics:
// everything pushproxy does beyond moving the bytes.

// rawChainCommand is the bench's own argument that runs the raw chain
// instead of the bench (the bench starts itself with it).
const rawChainCommand = "rawchain"

// rawChainBanner is what the raw chain prints once it takes events.
const rawChainBanner = "raw chain ready"

// rawChainConfig is what the raw chain's flags fill.
type rawChainConfig struct {
	dataDir, httpAddr, debugAddr string
	providerURL, providerCA      string
}

// rawChainMain runs the raw chain with args (after rawChainCommand) until
// it is interrupted, and returns the process's exit code.
func rawChainMain(args []string, stdout, stderr io.Writer) int {
	var cfg rawChainConfig
	fs := flag.NewFlagSet("pipelinebench "+rawChainCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pipelinebench %s [flags]\n\nRuns the whole pipeline's anchor, the chain of raw stages the bench compares pushctl standalone with (see rawchain.go), until interrupted. The bench starts it itself.\n\n", rawChainCommand)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.dataDir, "data-dir", "", "folder of the embedded NATS server's data (required)")
	fs.StringVar(&cfg.httpAddr, "http-addr", "127.0.0.1:0", "address of the events API (POST /v1/events) and of /metrics")
	fs.StringVar(&cfg.debugAddr, "debug-addr", "", "address of Go's profiles (/debug/pprof/), none when empty")
	fs.StringVar(&cfg.providerURL, "provider", "", "the APNs provider's base URL (required)")
	fs.StringVar(&cfg.providerCA, "provider-ca-file", "", "PEM file of the certificate authority the provider's certificate is trusted by (required)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cfg.dataDir == "" || cfg.providerURL == "" || cfg.providerCA == "" {
		fmt.Fprintf(stderr, "pipelinebench %s: -data-dir, -provider and -provider-ca-file are required\n", rawChainCommand)
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

// rawChain is the running chain.
type rawChain struct {
	js       jetstream.JetStream
	keyer    *events.Keyer
	relay    *relayclient.Client
	relayURL string
	// queue takes the consumers' deliveries to the senders.
	queue chan jetstream.Msg
	// since is every device's subscription time.
	since time.Time

	// failOnce reports only the chain's first error.
	failOnce sync.Once
}

// runRawChain starts the chain, prints rawChainBanner and serves until ctx
// ends.
func runRawChain(ctx context.Context, cfg rawChainConfig, stdout io.Writer) error {
	conn, err := broker.Connect(ctx, broker.Options{Name: "pipelinebench raw chain", Embedded: true, StoreDir: cfg.dataDir})
	if err != nil {
		return err
	}
	defer conn.Close()
	layout := broker.DefaultLayout()
	if err := broker.Provision(ctx, conn.JS, layout); err != nil {
		return err
	}
	keyer, err := broker.Keyer(ctx, conn.JS)
	if err != nil {
		return err
	}
	js, err := jetstream.New(conn.NC, jetstream.WithPublishAsyncMaxPending(ingest.DefaultMaxPending))
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	providerRoots, err := relay.ProviderRoots(cfg.providerCA)
	if err != nil {
		return err
	}
	fwd := forward.Start(forward.Config{Push: cfg.providerURL, Client: httpx.NewClient(httpx.ClientConfig{HTTP2Only: true, RootCAs: providerRoots}),
		Slots: relay.DefaultProviderConcurrent / 4, Path: relay.DefaultBasePath + relayproto.PublishPath})
	defer fwd.Close()
	issuer, err := rawChainIssuer()
	if err != nil {
		return err
	}
	c := &rawChain{
		js: js, keyer: keyer, relayURL: fwd.URL() + relay.DefaultBasePath, queue: make(chan jetstream.Msg, dispatcher.DefaultFetchBatch), since: time.Now().UTC(),
		relay: relayclient.New(relayclient.Config{Tokens: issuer, BreakerFailures: -1,
			HTTPClient: httpx.NewClient(httpx.ClientConfig{Timeout: relayclient.DefaultTimeout, MaxIdleConnsPerHost: 32, NoRedirects: true, RootCAs: fwd.Roots()})}),
	}
	for p := range layout.Partitions {
		cons, err := conn.JS.CreateOrUpdateConsumer(ctx, broker.StreamMail, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("raw-p%d", p), FilterSubject: broker.PartitionFilter(p),
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: dispatcher.DefaultMaxAckPending,
		})
		if err != nil {
			return fmt.Errorf("creating the consumer of partition %d: %w", p, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case c.queue <- m:
			case <-ctx.Done():
			}
		}, jetstream.PullMaxMessages(dispatcher.DefaultFetchBatch))
		if err != nil {
			return fmt.Errorf("consuming partition %d: %w", p, err)
		}
		defer cc.Stop()
	}
	var senders sync.WaitGroup
	defer senders.Wait()
	for range dispatcher.DefaultMaxInFlight {
		senders.Go(func() { c.send(ctx) })
	}
	stopServers, err := c.serve(cfg)
	if err != nil {
		return err
	}
	defer stopServers()
	fmt.Fprintln(stdout, rawChainBanner)
	<-ctx.Done()
	return nil
}

// serve starts the events API with /metrics and, with cfg.debugAddr, Go's
// profiles; the function it returns stops them.
func (c *rawChain) serve(cfg rawChainConfig) (func(), error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	api := http.NewServeMux()
	api.Handle("POST /v1/events", &bareingest.Handler{JS: c.js, Subject: func(user string) string { return c.keyer.Subject(benchOrg, user) }})
	api.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
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
		if _, err := c.relay.Publish(ctx, c.relayURL, notes); err != nil {
			c.fail(err)
			continue
		}
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
	name, _, _ := strings.Cut(e.User, "@")
	u, err := strconv.Atoi(strings.TrimPrefix(name, "u"))
	if err != nil {
		return relayproto.Notification{}, fmt.Errorf("user %q is not one of the bench's", e.User)
	}
	return relayproto.Notification{
		ID:         e.ChangeID,
		Payload:    relayproto.Payload{TenantID: benchOrg, UnseenEmailCount: e.Unread, BackgroundSyncType: relayproto.BackgroundSyncEmail},
		Recipients: []relayproto.Recipient{{AppID: benchTopic, DeviceID: deviceToken(u), LastSubscriptionUpdate: c.since}},
	}, nil
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
