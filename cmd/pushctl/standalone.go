package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/monitor"
	"github.com/pushproxy/pushproxy/internal/reconcile"
	"github.com/pushproxy/pushproxy/internal/reconcile/counters"
	"github.com/pushproxy/pushproxy/internal/relay"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/sourcestatus"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/tokens"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

// Defaults of pushctl standalone: everything on loopback.
const (
	standaloneNATS    = "127.0.0.1:4222"
	standaloneIngest  = "127.0.0.1:8025"
	standaloneRelay   = "127.0.0.1:8027"
	standaloneToken   = "standalone-dev-token"
	standaloneOrg     = "example.com"
	standaloneDemoApp = "demo"
)

const standaloneAbout = `
Runs the whole of pushproxy in one process on an embedded NATS server with
JetStream: ingest, the dispatcher, the relay (with the built-in "log"
provider and a live devices page) and the monitor. Data stays in --data-dir.

On first start it sets itself up for --organization, the way an operator
would with pushctl: it provisions the streams and buckets, creates an S2S
certificate (pushctl auth new-certificate), enables the proxy toward the
built-in relay (pushctl proxy enable), registers the certificate with the
relay (pushctl relay partner add) and adds the apps "demo" and
"pushproxy-canary" on the "log" provider (pushctl relay app add). Later
starts keep what is there, including changes made with pushctl.

Other pushctl commands reach this process's NATS at --nats-listen. Without
--native-token, ingest accepts the development token "standalone-dev-token".
Stop with Ctrl-C: requests and pushes in flight are drained first.`

func standaloneCommand() command {
	return command{name: "standalone", summary: "run everything in one process on an embedded NATS server", run: runStandalone}
}

// standalone is what the flags of pushctl standalone fill.
type standalone struct {
	nats       *broker.Options
	layout     *broker.Layout
	ingest     *ingest.Config
	extras     *ingest.Extras
	dispatcher *dispatcher.Config
	relay      *relay.Config
	monitor    *monitor.Config
	reconcile  *reconcile.Config
	counters   *counters.Settings
	org        string
	logLevel   string
	logFormat  string
	debugAddr  string
}

func standaloneFlags(fs *flag.FlagSet) *standalone {
	s := &standalone{
		nats:       broker.ConnectFlags(fs, "pushctl-standalone", true),
		layout:     broker.LayoutFlags(fs),
		ingest:     ingest.Flags(fs),
		extras:     ingest.ExtraFlags(fs),
		dispatcher: dispatcher.Flags(fs),
		relay:      relay.Flags(fs, "relay-"),
		monitor:    monitor.Flags(fs),
		reconcile:  reconcile.Flags(fs),
	}
	s.counters = counters.Flags(fs, counters.Shared{Graph: s.extras.Graph, GraphApp: s.extras.GraphApp, EWSApp: s.extras.EWSApp, IMAP: s.extras.IMAP})
	fs.StringVar(&s.org, "organization", standaloneOrg, "organization (domain) the first start sets the proxy up for")
	fs.StringVar(&s.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&s.logFormat, "log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	fs.StringVar(&s.debugAddr, "debug-addr", "", service.DebugAddrUsage)
	setDefault(fs, "nats-listen", standaloneNATS)
	setDefault(fs, "http-addr", standaloneIngest)
	setDefault(fs, "relay-http-addr", standaloneRelay)
	setDefault(fs, "relay-devices-page", "true")
	// Standalone derives the relay's host from the proxy URI it sets up.
	fs.Lookup("relay-host").Usage = "the relay's host name as tokens name it in their audience (default: the host of the proxy URI, which standalone sets up)"
	return s
}

// setDefault changes a flag's default before parsing.
func setDefault(fs *flag.FlagSet, name, value string) {
	f := fs.Lookup(name)
	if err := f.Value.Set(value); err != nil {
		panic(fmt.Sprintf("default of --%s: %v", name, err))
	}
	f.DefValue = value
}

func runStandalone(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("standalone", "pushctl standalone [flags]", standaloneAbout)
	s := standaloneFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	log, err := service.NewLogger(c.stderr, s.logLevel, s.logFormat)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if s.debugAddr != "" {
		debug, err := service.ListenDebug(s.debugAddr, log)
		if err != nil {
			return fmt.Errorf("--debug-addr: %w", err)
		}
		go func() {
			if err := debug.Run(ctx); err != nil {
				log.Warn().Err(err).Msg("serving profiles")
			}
		}()
	}
	if len(s.ingest.NativeTokens) == 0 && s.ingest.NativeTokenFile == "" {
		s.ingest.NativeTokens = []string{standaloneToken}
		log.Warn().Msg("ingest accepts the development token " + standaloneToken + ": set --native-token for anything but a trial")
	}
	s.nats.Log = log
	conn, err := broker.Connect(ctx, *s.nats)
	if err != nil {
		return err
	}
	defer conn.Close()
	setup, err := s.bootstrap(ctx, conn, log)
	if err != nil {
		return err
	}
	reg := c.registry
	if reg == nil {
		reg = service.NewRegistry()
	}
	return s.run(ctx, conn, setup, log, reg, c.stdout)
}

// setup is what bootstrap found or made.
type setup struct {
	store   *settings.Store
	certDir string
	proxy   settings.Proxy
}

// bootstrap provisions and, on first start, configures auth, the proxy
// and the relay's registries. It changes nothing an operator already set.
func (s *standalone) bootstrap(ctx context.Context, conn *broker.Conn, log zerolog.Logger) (setup, error) {
	if err := broker.Provision(ctx, conn.JS, *s.layout); err != nil {
		return setup{}, err
	}
	store, err := settings.Open(ctx, conn.JS)
	if err != nil {
		return setup{}, err
	}
	certDir, err := filepath.Abs(filepath.Join(s.nats.StoreDir, "auth"))
	if err != nil {
		return setup{}, err
	}
	auth, err := store.Auth(ctx)
	if err != nil {
		return setup{}, err
	}
	if auth.CurrentCertificateThumbprint == "" {
		if auth, err = newStandaloneCertificate(ctx, store, certDir, s.org); err != nil {
			return setup{}, err
		}
		log.Info().Str("thumbprint", auth.CurrentCertificateThumbprint).Msg("created the S2S certificate")
	}
	certDir = onprem.CertDir(auth, "")
	proxy, err := store.Proxy(ctx)
	if err != nil {
		return setup{}, err
	}
	if proxy.WhenCreated.IsZero() {
		if proxy, _, err = store.EnableProxy(ctx, s.org, "http://"+s.relayHostPort()+relay.DefaultBasePath); err != nil {
			return setup{}, err
		}
		log.Info().Str("organization", proxy.Organization).Str("uri", proxy.URI).Msg("enabled the push notification proxy")
	}
	if err := s.registerWithRelay(ctx, conn, auth, proxy, certDir); err != nil {
		return setup{}, err
	}
	return setup{store: store, certDir: certDir, proxy: proxy}, nil
}

func newStandaloneCertificate(ctx context.Context, store *settings.Store, dir, org string) (settings.Auth, error) {
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: org})
	if err != nil {
		return settings.Auth{}, err
	}
	if err := onprem.Save(dir, cert); err != nil {
		return settings.Auth{}, err
	}
	return store.UpdateAuth(ctx, func(a *settings.Auth) error {
		a.CurrentCertificateThumbprint = cert.Thumbprint()
		a.CertificateDir = dir
		return nil
	})
}

// registerWithRelay registers the organization's certificates and the
// standalone apps with the built-in relay, and points the relay's token
// audience at the proxy URI's host.
func (s *standalone) registerWithRelay(ctx context.Context, conn *broker.Conn, auth settings.Auth, proxy settings.Proxy, certDir string) error {
	u, err := url.Parse(proxy.URI)
	if err != nil {
		return fmt.Errorf("proxy uri: %w", err)
	}
	if s.relay.Host == "" {
		s.relay.Host = u.Hostname()
	}
	if s.relay.PublicURL == "" {
		// The proxy URI is where the dispatcher reaches this relay.
		s.relay.PublicURL = proxy.URI
	}
	reg, err := registry.Provision(ctx, conn.JS, s.layout.Replicas)
	if err != nil {
		return err
	}
	org := proxy.Organization
	if org == "" {
		org = s.org
	}
	realm := auth.Realm
	if realm == "" {
		realm = org
	}
	for _, thumb := range []string{auth.CurrentCertificateThumbprint, auth.NextCertificateThumbprint} {
		if thumb == "" {
			continue
		}
		cert, err := onprem.Load(certDir, thumb)
		if err != nil {
			return err
		}
		if _, _, err := reg.AddCertificate(ctx, registry.CertificateRegistration{Organization: org, Realm: realm, Certificate: cert.X509.Raw}); err != nil {
			return fmt.Errorf("registering certificate %s with the relay: %w", thumb, err)
		}
	}
	for _, app := range []string{standaloneDemoApp, monitor.DefaultCanaryAppID} {
		_, err := reg.AddApp(ctx, registry.App{AppID: app, Provider: registry.KindLog, Organizations: []string{org}}, false)
		if err != nil && !errors.Is(err, registry.ErrExists) {
			return fmt.Errorf("adding app %s to the relay: %w", app, err)
		}
	}
	return nil
}

func (s *standalone) relayHostPort() string {
	host, port, err := net.SplitHostPort(s.relay.Addr)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// startTimeout bounds how long one part of standalone may take to become
// ready before the whole start fails.
const startTimeout = 60 * time.Second

// run starts the parts in the order they depend on each other, each after
// the ones before it answer ready: the relay, then the dispatcher, then
// ingest, then the monitor (so no probe runs before the relay accepts it).
// The banner is printed once everything accepts work, and ingest's /readyz
// answers ready only from then on. It runs until ctx ends or a part fails.
func (s *standalone) run(ctx context.Context, conn *broker.Conn, st setup, log zerolog.Logger, reg *prometheus.Registry, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	keyer, err := broker.Keyer(ctx, conn.JS)
	if err != nil {
		return err
	}
	canary, err := ingest.NewPublisher(conn.NC, keyer, s.ingest.PublishTimeout)
	if err != nil {
		return err
	}
	exts, err := s.extras.Extensions(ctx, conn, reg)
	if err != nil {
		return err
	}
	subs, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		return err
	}
	// The devices page runs beside the on-premises side here: it names
	// each device with its user and label.
	s.relay.DeviceNames = subs.Namer().Name
	s.dispatcher.Tokens = onprem.NewSource(st.store, st.certDir)
	s.monitor.CertDir = st.certDir
	s.monitor.Canary.Publisher = canary
	d, err := dispatcher.New(ctx, *s.dispatcher, conn, log, reg)
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}

	parts := newParts(ctx, cancel)
	relayURL := "http://" + s.relayHostPort()
	ingestURL := "http://" + s.ingest.Addr
	exts = append(exts, func(srv *ingest.Server) error {
		srv.AddReadyCheck(parts.ready)
		// The monitor's sources page, on ingest's address: one process,
		// one place to look (cmd/monitor serves it on its own address).
		srv.Handle("GET "+monitor.SourcesPath, sourcestatus.Handler(func(ctx context.Context) (sourcestatus.Report, error) {
			return sourcestatus.Collect(ctx, conn.NC, conn.JS, 500*time.Millisecond)
		}))
		return nil
	})
	steps := []part{
		{name: "relay", ready: httpReady(relayURL + "/readyz"), run: func(ctx context.Context) error {
			return relay.Run(ctx, *s.relay, conn, log, reg)
		}},
		{name: "dispatcher", ready: d.Ready, run: d.Run},
		{name: "ingest", ready: httpReady(ingestURL + "/healthz"), run: func(ctx context.Context) error {
			return ingest.Run(ctx, *s.ingest, conn, log.With().Str("component", "ingest").Logger(), reg, exts...)
		}},
		{name: "monitor", run: func(ctx context.Context) error {
			return monitor.Run(ctx, *s.monitor, conn, log.With().Str("component", "monitor").Logger(), reg)
		}},
	}
	if s.counters.Enabled() {
		rlog := log.With().Str("component", "reconciler").Logger()
		list, err := s.counters.Build(rlog, reg)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		cfg := *s.reconcile
		cfg.Counters, cfg.Mailbox = list, s.dispatcher.Unread.Mailbox
		steps = append(steps, part{name: "reconciler", run: func(ctx context.Context) error {
			return reconcile.Run(ctx, cfg, conn, rlog, reg)
		}})
	} else {
		log.Info().Msg("reconciler off: give a mail system to read true counts from (--doveadm-url, --imap-addr, --graph-app-tenant-id or --ews-url)")
	}
	for _, p := range steps {
		if err := parts.start(p); err != nil {
			cancel()
			first := parts.wait()
			log.Info().Msg("standalone stopped")
			return errors.Join(first, err)
		}
	}
	parts.allReady()
	printBanner(out, s, st)
	err = parts.wait()
	log.Info().Msg("standalone stopped")
	return err
}

func printBanner(w io.Writer, s *standalone, st setup) {
	ingestURL := "http://" + s.ingest.Addr
	fmt.Fprintf(w, `pushproxy standalone: everything runs in this process (data in %s)
  ingest       %s   (native token: Bearer %s)
  relay        %s
  devices page http://%s%s
  NATS         nats://%s   (other pushctl commands connect here)
  proxy        enabled=%v organization=%s

Subscribe a device, then report new mail:
  curl -s -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '{"tenant":"%s","user":"alice@%s","appId":"%s","deviceId":"phone-1","platform":"APNS"}' \
    %s/v1/subscriptions
  curl -s -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '{"user":"alice@%s","kind":"new","unread":3,"change_id":"msg-1","occurred_at":"2026-01-01T00:00:00Z"}' \
    %s/v1/events
`, s.nats.StoreDir, ingestURL, firstToken(s.ingest), st.proxy.URI, s.relayHostPort(), s.relay.DevicesPath, s.nats.Listen,
		st.proxy.Enabled, st.proxy.Organization,
		firstToken(s.ingest), st.proxy.Organization, st.proxy.Organization, standaloneDemoApp, ingestURL,
		firstToken(s.ingest), st.proxy.Organization, ingestURL)
}

func firstToken(cfg *ingest.Config) string {
	if len(cfg.NativeTokens) > 0 {
		return cfg.NativeTokens[0]
	}
	return "<token from --native-token-file>"
}
