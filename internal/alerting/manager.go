package alerting

import (
	"github.com/pushproxy/pushproxy/internal/service"

	"context"
	"errors"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Sink delivers alerts somewhere: a log, a NATS subject, an Alertmanager.
type Sink interface {
	// Name is the sink's short name for logs and metrics.
	Name() string
	// Send delivers alerts. An error wrapped with backoff.Permanent is not
	// retried; any other error is.
	Send(ctx context.Context, alerts []Alert) error
}

// Resender is a Sink that wants the firing alerts again every
// ResendInterval, as the Alertmanager does: it resolves an alert it has not
// heard of for its resolve_timeout.
type Resender interface {
	Sink
	ResendInterval() time.Duration
}

// ManagerConfig configures NewManager.
type ManagerConfig struct {
	// Rules to evaluate; DefaultRules when nil.
	Rules []Rule
	// Sinks receive every alert that fires or resolves.
	Sinks []Sink
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// EvaluateEvery is how often Run checks for resolved incidents;
	// 10 seconds when zero.
	EvaluateEvery time.Duration
	// MaxRetry is how long a failing sink is retried for one batch before
	// the batch is dropped for it; one minute when zero.
	MaxRetry time.Duration
	// Log receives delivery failures.
	Log zerolog.Logger
	// Registerer registers the alerting metrics; none when nil.
	Registerer prometheus.Registerer
}

// Manager is an Engine safe for concurrent use that delivers the alerts
// changing state to its sinks. Each sink has its own queue, so a slow sink
// does not hold back another.
type Manager struct {
	log      zerolog.Logger
	every    time.Duration
	maxRetry time.Duration
	metrics  *managerMetrics

	mu     sync.Mutex
	engine *Engine

	workers []*sinkWorker
}

type managerMetrics struct {
	firing     *prometheus.GaugeVec
	alerts     *prometheus.CounterVec
	deliveries *prometheus.CounterVec
}

func newManagerMetrics(reg prometheus.Registerer) (*managerMetrics, error) {
	m := &managerMetrics{
		firing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushproxy_alerts_firing",
			Help: "Alerts currently firing, by alert name.",
		}, []string{"alertname"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_alerts_total",
			Help: "Alert state changes, by alert name and status (firing, resolved).",
		}, []string{"alertname", "status"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_alert_deliveries_total",
			Help: "Alert batches delivered to sinks, by sink and result (ok, failed).",
		}, []string{"sink", "result"}),
	}
	if err := service.Register(reg, "alerting", m.firing, m.alerts, m.deliveries); err != nil {
		return nil, err
	}
	return m, nil
}

// NewManager returns a Manager. Call Run to deliver alerts.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	rules := cfg.Rules
	if rules == nil {
		rules = DefaultRules()
	}
	engine, err := NewEngine(rules, cfg.Now)
	if err != nil {
		return nil, err
	}
	metrics, err := newManagerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		log:      cfg.Log,
		every:    cfg.EvaluateEvery,
		maxRetry: cfg.MaxRetry,
		metrics:  metrics,
		engine:   engine,
	}
	if m.every <= 0 {
		m.every = 10 * time.Second
	}
	if m.maxRetry <= 0 {
		m.maxRetry = time.Minute
	}
	for _, s := range cfg.Sinks {
		m.workers = append(m.workers, &sinkWorker{sink: s, wake: make(chan struct{}, 1)})
	}
	return m, nil
}

// Observe feeds a signal to the rules and queues the resulting alert, if
// any, for the sinks. It fails only for a signal that names no rule.
func (m *Manager) Observe(sig Signal) error {
	m.mu.Lock()
	alerts, err := m.engine.Observe(sig)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	m.emit(alerts)
	return nil
}

// Evaluate resolves incidents whose condition has cleared and queues the
// resolved notices. Run calls it periodically.
func (m *Manager) Evaluate() {
	m.mu.Lock()
	alerts := m.engine.Evaluate()
	m.mu.Unlock()
	m.emit(alerts)
}

// Active returns the firing alerts.
func (m *Manager) Active() []Alert {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.engine.Active()
}

func (m *Manager) emit(alerts []Alert) {
	if len(alerts) == 0 {
		return
	}
	for _, a := range alerts {
		m.metrics.alerts.WithLabelValues(a.Name(), a.Status()).Inc()
		if a.Resolved() {
			m.metrics.firing.WithLabelValues(a.Name()).Dec()
		} else {
			m.metrics.firing.WithLabelValues(a.Name()).Inc()
		}
	}
	for _, w := range m.workers {
		w.push(alerts)
	}
}

// Run evaluates the rules periodically, delivers queued alerts to the sinks
// and resends the firing ones to sinks that want it, until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range m.workers {
		wg.Go(func() { m.runWorker(ctx, w) })
		if r, ok := w.sink.(Resender); ok && r.ResendInterval() > 0 {
			wg.Go(func() { m.resend(ctx, w, r.ResendInterval()) })
		}
	}
	tick := time.NewTicker(m.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-tick.C:
			m.Evaluate()
		}
	}
}

func (m *Manager) resend(ctx context.Context, w *sinkWorker, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if active := m.Active(); len(active) > 0 {
				w.push(active)
			}
		}
	}
}

// sinkWorker is the queue of one sink.
type sinkWorker struct {
	sink Sink
	wake chan struct{}

	mu    sync.Mutex
	queue []Alert
}

func (w *sinkWorker) push(alerts []Alert) {
	w.mu.Lock()
	w.queue = append(w.queue, alerts...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *sinkWorker) take() []Alert {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.queue
	w.queue = nil
	return q
}

func (m *Manager) runWorker(ctx context.Context, w *sinkWorker) {
	for {
		if batch := w.take(); len(batch) > 0 {
			m.deliver(ctx, w.sink, batch)
			continue
		}
		select {
		case <-ctx.Done():
			m.flush(w)
			return
		case <-w.wake:
		}
	}
}

// flush makes one last, short attempt at what is still queued when the
// manager stops, so that a resolved notice raised during shutdown is not
// silently lost.
func (m *Manager) flush(w *sinkWorker) {
	batch := w.take()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.sink.Send(ctx, batch); err != nil {
		m.metrics.deliveries.WithLabelValues(w.sink.Name(), "failed").Inc()
		m.log.Error().Err(err).Str("sink", w.sink.Name()).Int("alerts", len(batch)).Msg("could not deliver alerts at shutdown")
		return
	}
	m.metrics.deliveries.WithLabelValues(w.sink.Name(), "ok").Inc()
}

// deliver sends one batch to a sink, retrying with jittered exponential
// back-off for up to maxRetry.
func (m *Manager) deliver(ctx context.Context, sink Sink, batch []Alert) {
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(500*time.Millisecond),
		backoff.WithMaxInterval(15*time.Second),
		backoff.WithMaxElapsedTime(m.maxRetry),
	), ctx)
	err := backoff.RetryNotify(func() error {
		sendCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return sink.Send(sendCtx, batch)
	}, b, func(err error, wait time.Duration) {
		m.log.Debug().Err(err).Str("sink", sink.Name()).Dur("retry_in", wait).Msg("alert delivery failed; retrying")
	})
	if err != nil {
		m.metrics.deliveries.WithLabelValues(sink.Name(), "failed").Inc()
		if !errors.Is(err, context.Canceled) {
			m.log.Error().Err(err).Str("sink", sink.Name()).Int("alerts", len(batch)).Msg("could not deliver alerts")
		}
		return
	}
	m.metrics.deliveries.WithLabelValues(sink.Name(), "ok").Inc()
}
