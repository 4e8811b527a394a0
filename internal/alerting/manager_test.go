package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/alerting/alertingtest"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/logtest"
)

// syncClock is a manual clock safe for concurrent use.
type syncClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *syncClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *syncClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func runManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestManagerBurstIsOneAlertThenOneResolved(t *testing.T) {
	conn := brokertest.Start(t)
	am := alertingtest.New(t)
	amSink, err := NewAlertmanagerSink(am.URL, "http://monitor.test:9090/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	amSink.Resend = -1

	var natsMsgs []Message
	var natsMu sync.Mutex
	sub, err := conn.NC.Subscribe(SubjectPrefix+".>", func(msg *nats.Msg) {
		var m Message
		if err := json.Unmarshal(msg.Data, &m); err != nil {
			t.Errorf("alert on NATS is not JSON: %v", err)
		}
		if msg.Subject != Subject(Severity(m.Labels[LabelSeverity])) {
			t.Errorf("alert on subject %s with severity %s", msg.Subject, m.Labels[LabelSeverity])
		}
		natsMu.Lock()
		natsMsgs = append(natsMsgs, m)
		natsMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	var logs logtest.Buffer
	clock := &syncClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	m, err := NewManager(ManagerConfig{
		Sinks:         []Sink{LogSink{Log: zerolog.New(&logs)}, NATSSink{NC: conn.NC}, amSink},
		Now:           clock.now,
		EvaluateEvery: time.Hour,
		Registerer:    reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	runManager(t, m)

	for i := range 25 {
		clock.advance(100 * time.Millisecond)
		if err := m.Observe(Signal{Rule: RuleEventsAbandoned, Detail: "abandoned event " + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	firing := am.WaitFor(t, RuleEventsAbandoned, 30*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 1 })
	if firing[0].Resolved() || firing[0].Labels["severity"] != "warning" || firing[0].GeneratorURL != "http://monitor.test:9090/metrics" {
		t.Fatalf("firing alert: %+v", firing[0])
	}
	if got := testutil.ToFloat64(m.metrics.firing.WithLabelValues(RuleEventsAbandoned)); got != 1 {
		t.Errorf("firing gauge = %v", got)
	}

	clock.advance(5 * time.Minute) // still within the cool-down
	m.Evaluate()
	clock.advance(10 * time.Minute)
	m.Evaluate()
	am.WaitFor(t, RuleEventsAbandoned, 30*time.Second, func(p []alertingtest.Posted) bool { return len(p) >= 2 })

	// Give a stray extra post time to show up before counting.
	time.Sleep(200 * time.Millisecond)
	got := am.Alerts(RuleEventsAbandoned)
	if len(got) != 2 || got[0].Resolved() || !got[1].Resolved() || got[0].StartsAt != got[1].StartsAt {
		t.Fatalf("alertmanager got %+v, want one firing then one resolved for the same incident", got)
	}
	if got[0].Annotations["description"] != "abandoned event a" || got[1].Annotations["description"] != "abandoned event y" {
		t.Errorf("descriptions %q, %q", got[0].Annotations["description"], got[1].Annotations["description"])
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		natsMu.Lock()
		n := len(natsMsgs)
		natsMu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	natsMu.Lock()
	if len(natsMsgs) != 2 || natsMsgs[0].Status != "firing" || natsMsgs[1].Status != "resolved" || natsMsgs[0].Occurrences != 1 || natsMsgs[1].Occurrences != 25 {
		t.Fatalf("NATS messages: %+v", natsMsgs)
	}
	natsMu.Unlock()
	if s := logs.String(); strings.Count(s, `"alert firing"`) != 1 || strings.Count(s, `"alert resolved"`) != 1 {
		t.Fatalf("log lines:\n%s", s)
	}
}

// flakySink fails a number of times, then records what it gets.
type flakySink struct {
	failures atomic.Int32
	mu       sync.Mutex
	got      [][]Alert
	calls    atomic.Int32
}

func (s *flakySink) Name() string { return "flaky" }

func (s *flakySink) Send(_ context.Context, alerts []Alert) error {
	s.calls.Add(1)
	if s.failures.Add(-1) >= 0 {
		return errors.New("sink down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, alerts)
	return nil
}

func (s *flakySink) batches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func TestManagerRetriesAFailingSink(t *testing.T) {
	sink := &flakySink{}
	sink.failures.Store(2)
	m, err := NewManager(ManagerConfig{Sinks: []Sink{sink}, EvaluateEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	if err := m.Observe(Signal{Rule: RuleProbeFailing, Failing: true}); err != nil {
		t.Fatal(err)
	}
	if err := m.Observe(Signal{Rule: RuleProbeFailing, Failing: true}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for sink.batches() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sink never got the alert; %d calls", sink.calls.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := sink.calls.Load(); c != 3 {
		t.Fatalf("%d calls, want 2 failures and 1 success", c)
	}
	if err := m.Observe(Signal{Rule: "Nope"}); !errors.Is(err, ErrUnknownRule) {
		t.Fatalf("unknown rule: %v", err)
	}
}

func TestAlertmanagerSinkRefusedPayloadIsPermanent(t *testing.T) {
	tests := []struct {
		status    int
		permanent bool
	}{{400, true}, {422, true}, {429, false}, {503, false}}
	for _, tt := range tests {
		srv := newStatusServer(t, tt.status)
		s, err := NewAlertmanagerSink(srv, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		err = s.Send(context.Background(), []Alert{{Labels: map[string]string{"alertname": "X"}}})
		var perm *backoffPermanent
		if err == nil || errors.As(err, &perm) != tt.permanent {
			t.Errorf("status %d: err %v, permanent %v, want %v", tt.status, err, errors.As(err, &perm), tt.permanent)
		}
	}
	if _, err := NewAlertmanagerSink("alertmanager:9093", "", nil); err == nil {
		t.Error("a URL without scheme was accepted")
	}
}

type backoffPermanent = backoff.PermanentError

func newStatusServer(t *testing.T, status int) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", status)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
