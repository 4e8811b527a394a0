// Package monitor watches a pushproxy deployment and tells operators when
// pushes do not flow:
//
//   - the connectivity probe (internal/probe) runs on a schedule;
//   - the end-to-end canary sends a synthetic event for a canary user
//     through ingest and waits for its push record in PUSH_SENT;
//   - the signing certificates' expiry is checked;
//   - new dead letters (PUSH_DEAD), captured MAX_DELIVERIES and
//     MSG_TERMINATED advisories (ADVISORIES) and device subscriptions
//     pruned by pushes (PUSH_SENT records) are watched.
//
// Probe and canary results go to the PROBES stream and to metrics;
// everything feeds the alert rules of internal/alerting, whose alerts go to
// the log, to NATS subjects monitor.alerts.<severity> and, when configured,
// to a Prometheus Alertmanager. cmd/monitor and pushctl standalone both
// call Run.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/pushproxy/pushproxy/internal/alerting"
	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/probe"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/sourcestatus"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// Defaults of Config.
const (
	DefaultProbeInterval = time.Minute
	DefaultProbeTimeout  = 15 * time.Second
	// DefaultDeadLetterCheckInterval is how often the dead letters that
	// wait are counted.
	DefaultDeadLetterCheckInterval = 30 * time.Second
)

// Config configures Run. Zero fields take the defaults.
type Config struct {
	// ProbeInterval is how often the connectivity probe runs;
	// DefaultProbeInterval when zero, never when negative.
	ProbeInterval time.Duration
	// ProbeTimeout bounds the relay's answer to one probe.
	ProbeTimeout time.Duration
	// CertDir is the folder of the S2S certificates; the one in the auth
	// configuration when empty. The probe signs its token with the current
	// certificate, and the expiry check reads both.
	CertDir string
	// CertCheckInterval is how often certificate expiry is checked;
	// DefaultCertCheckInterval when zero, never when negative.
	CertCheckInterval time.Duration
	// DeadLetterCheckInterval is how often the dead letters that wait in
	// PUSH_DEAD are counted (metric pushproxy_dead_letters_pending, alert
	// PushDeadLetters); DefaultDeadLetterCheckInterval when zero, never
	// when negative.
	DeadLetterCheckInterval time.Duration

	// Canary configures the end-to-end canary. It runs when it has an
	// ingest URL or a publisher, unless its Interval is negative.
	Canary CanaryConfig

	// AlertmanagerURL, when set, is the Alertmanager that receives alerts
	// (POST /api/v2/alerts).
	AlertmanagerURL string
	// AlertResend is how often firing alerts are posted to the
	// Alertmanager again; one minute when zero.
	AlertResend time.Duration
	// GeneratorURL links alerts to their source, e.g. this monitor's
	// /metrics page. Optional.
	GeneratorURL string
	// Rules are the alerting rules; alerting.DefaultRules when nil.
	Rules []alerting.Rule
	// EvaluateEvery is how often rules are checked for resolved incidents;
	// ten seconds when zero.
	EvaluateEvery time.Duration

	// HTTPAddr, when set, is where /healthz, /readyz and /metrics are
	// served. pushctl standalone leaves it empty and serves its own.
	HTTPAddr string
}

// metrics are the monitor's own metrics besides the probe's, the
// canary's and the alerting's.
type metrics struct {
	certExpiry  *prometheus.GaugeVec
	seen        *prometheus.CounterVec
	deadPending prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushproxy_certificate_expiry_timestamp_seconds",
			Help: "When each S2S signing certificate (current, next) expires, in Unix seconds.",
		}, []string{"certificate"}),
		seen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_monitor_messages_seen_total",
			Help: "Messages the monitor read from the streams it watches (dead_letters, advisories, pushes).",
		}, []string{"watch"}),
		deadPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushproxy_dead_letters_pending",
			Help: "Dead letters that wait in PUSH_DEAD to be redriven or discarded (pushctl dlq); their users' badges are stale.",
		}),
	}
	if err := service.Register(reg, "monitor", m.certExpiry, m.seen, m.deadPending); err != nil {
		return nil, err
	}
	return m, nil
}

// SourcesPath is where the monitor's HTTP address serves the sources'
// status page (sourcestatus.Handler): what pushctl sources status prints.
const SourcesPath = "/status/sources"

// Run monitors the deployment on conn until ctx ends. It needs the layout
// provisioned. Metrics are registered on reg.
func Run(ctx context.Context, cfg Config, conn *broker.Conn, log zerolog.Logger, reg *prometheus.Registry) error {
	if err := broker.Ready(ctx, conn.JS); err != nil {
		return err
	}
	store, err := settings.Open(ctx, conn.JS)
	if err != nil {
		return err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return err
	}
	probeMetrics, err := probe.NewMetrics(reg, "probe", "connectivity probe")
	if err != nil {
		return err
	}
	canaryMetrics, err := probe.NewMetrics(reg, "canary", "end-to-end canary")
	if err != nil {
		return err
	}

	sinks := []alerting.Sink{alerting.LogSink{Log: log.With().Str("component", "alerts").Logger()}, alerting.NATSSink{NC: conn.NC, GeneratorURL: cfg.GeneratorURL}}
	if cfg.AlertmanagerURL != "" {
		am, err := alerting.NewAlertmanagerSink(cfg.AlertmanagerURL, cfg.GeneratorURL, nil)
		if err != nil {
			return err
		}
		am.Resend = cfg.AlertResend
		sinks = append(sinks, am)
	}
	alerts, err := alerting.NewManager(alerting.ManagerConfig{
		Rules: cfg.Rules, Sinks: sinks, EvaluateEvery: cfg.EvaluateEvery,
		Log: log, Registerer: reg,
	})
	if err != nil {
		return err
	}

	var checks []scheduled
	if interval := orDefault(cfg.ProbeInterval, DefaultProbeInterval); interval > 0 {
		deps := probe.NewDeps(store, cfg.CertDir, orDefault(cfg.ProbeTimeout, DefaultProbeTimeout))
		checks = append(checks, scheduled{interval, checker{
			name: "probe", subject: probe.SubjectConnectivity, rule: alerting.RuleProbeFailing,
			metrics: probeMetrics, conn: conn, alerts: alerts, log: log,
			run: func(ctx context.Context) probe.Result { return probe.Run(ctx, deps) },
		}.once})
	}
	canaryOn := cfg.Canary.Enabled() && cfg.Canary.Interval >= 0
	if canaryOn {
		if cfg.Canary.IngestTokenFile != "" {
			if cfg.Canary.IngestToken, err = readTokenFile(cfg.Canary.IngestTokenFile); err != nil {
				return err
			}
		}
		keyer, err := broker.Keyer(ctx, conn.JS)
		if err != nil {
			return err
		}
		subs, err := subscriptions.Open(ctx, conn.JS, keyer)
		if err != nil {
			return err
		}
		ccfg := cfg.Canary
		if ccfg.Diagnose == nil {
			deps := probe.NewDeps(store, cfg.CertDir, orDefault(cfg.ProbeTimeout, DefaultProbeTimeout))
			ccfg.Diagnose = func(ctx context.Context) probe.Result { return probe.Run(ctx, deps) }
		}
		canary := NewCanary(ccfg, conn.JS, store, subs, keyer)
		checks = append(checks, scheduled{canary.cfg.Interval, checker{
			name: "canary", subject: probe.SubjectCanary, rule: alerting.RuleCanaryFailing,
			metrics: canaryMetrics, conn: conn, alerts: alerts, log: log, run: canary.Run,
		}.once})
	} else {
		log.Info().Msg("end-to-end canary off: give an ingest URL and token to turn it on")
	}
	if interval := orDefault(cfg.CertCheckInterval, DefaultCertCheckInterval); interval > 0 {
		checks = append(checks, scheduled{interval, func(ctx context.Context) {
			sigs, err := certificateSignals(ctx, store, cfg.CertDir, time.Now(), m.certExpiry)
			if err != nil {
				log.Warn().Err(err).Msg("checking certificate expiry")
			}
			for _, s := range sigs {
				if err := alerts.Observe(s); err != nil {
					log.Error().Err(err).Msg("alert rule missing")
				}
			}
		}})
	}
	if interval := orDefault(cfg.DeadLetterCheckInterval, DefaultDeadLetterCheckInterval); interval > 0 {
		checks = append(checks, scheduled{interval, func(ctx context.Context) {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			sig, err := deadLetterCheck(cctx, conn.JS, m.deadPending)
			if err != nil {
				log.Warn().Err(err).Msg("counting dead letters")
				return
			}
			if err := alerts.Observe(sig); err != nil {
				log.Error().Err(err).Msg("alert rule missing")
			}
		}})
	}
	var serve func(context.Context) error
	if cfg.HTTPAddr != "" {
		ln, err := service.Listen(cfg.HTTPAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		service.Handle(mux, reg, ingest.Connected(conn.NC), func(ctx context.Context) error { return broker.Ready(ctx, conn.JS) })
		mux.Handle("GET "+SourcesPath, sourcestatus.Handler(func(ctx context.Context) (sourcestatus.Report, error) {
			return sourcestatus.Collect(ctx, conn.NC, conn.JS, time.Second)
		}))
		serve = func(ctx context.Context) error { return service.Serve(ctx, log, ln, mux, 5*time.Second) }
	}

	// Every part runs until ctx ends; the first that fails stops the
	// others, and its error is Run's.
	g, ctx := errgroup.WithContext(ctx)
	start := func(f func() error) {
		g.Go(func() error {
			if err := f(); !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		})
	}
	start(func() error { return alerts.Run(ctx) })
	for _, w := range watchers() {
		start(func() error { return watch(ctx, conn.JS, w, alerts, m.seen, log) })
	}
	for _, c := range checks {
		start(func() error { every(ctx, c.interval, c.run); return nil })
	}
	if serve != nil {
		start(func() error { return serve(ctx) })
	}

	log.Info().Dur("probe_interval", orDefault(cfg.ProbeInterval, DefaultProbeInterval)).
		Bool("canary", canaryOn).Bool("alertmanager", cfg.AlertmanagerURL != "").Msg("monitor started")
	<-ctx.Done()
	return g.Wait()
}

// scheduled is a check and how often it runs.
type scheduled struct {
	interval time.Duration
	run      func(context.Context)
}

// checker runs the probe or the canary and records each result.
type checker struct {
	name    string
	subject string
	rule    string
	metrics *probe.Metrics
	conn    *broker.Conn
	alerts  *alerting.Manager
	log     zerolog.Logger
	run     func(context.Context) probe.Result
}

// once runs the check, then records the result in metrics, in PROBES and
// in the alert rule.
func (c checker) once(ctx context.Context) {
	r := c.run(ctx)
	if ctx.Err() != nil {
		return // shutting down: the result says nothing about the relay
	}
	failures := c.metrics.Observe(r)
	if err := probe.Publish(ctx, c.conn.JS, c.subject, r); err != nil {
		c.log.Warn().Err(err).Str("check", c.name).Msg("could not record the result")
	}
	if err := c.alerts.Observe(alertSignal(c.rule, r)); err != nil {
		c.log.Error().Err(err).Msg("alert rule missing")
	}
	ev := c.log.Debug()
	if !r.Succeeded() {
		ev = c.log.Warn().Str("class", string(r.Class)).Str("error", r.Error).Int("consecutive_failures", failures)
	}
	ev.Str("check", c.name).Str("result", string(r.ResultType)).Dur("latency", r.Latency).Msg("check ran")
}

// alertSignal is the state signal of a probe or canary result.
func alertSignal(rule string, r probe.Result) alerting.Signal {
	sig := alerting.Signal{Rule: rule, Failing: !r.Succeeded()}
	if !r.Succeeded() {
		sig.Detail = fmt.Sprintf("%s failure: %s", r.Class, r.Error)
	}
	return sig
}

// every runs f at once, then every interval, until ctx ends. Runs never
// overlap: a slow run delays the next.
func every(ctx context.Context, interval time.Duration, f func(context.Context)) {
	f(ctx)
	service.Every(ctx, interval, func() { f(ctx) })
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
