package relayclient

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// breakerClient is a client with a fake clock whose breaker opens after
// three failures for 30s, at most 100s.
func breakerClient(clock *fakeClock) *Client {
	return New(Config{
		Tokens:             staticTokens{token: "t"},
		BreakerFailures:    3,
		BreakerCooldown:    30 * time.Second,
		BreakerMaxCooldown: 100 * time.Second,
		Now:                clock.Now,
	})
}

// publishOnce publishes one notification and returns the error.
func publishOnce(t *testing.T, c *Client, relay *testRelay) error {
	t.Helper()
	_, err := c.Publish(t.Context(), relay.uri(), batchOf(1))
	return err
}

// checkState fails the test unless the client's breaker is in want.
func checkState(t *testing.T, c *Client, want BreakerState, wantHealthy bool) {
	t.Helper()
	if got := c.State(); got != want {
		t.Fatalf("breaker %s, want %s", got, want)
	}
	if got := c.Healthy(); got != wantHealthy {
		t.Fatalf("Healthy() = %t, want %t in state %s", got, wantHealthy, want)
	}
}

func TestBreakerOpensFailsFastThenHalfOpenCloses(t *testing.T) {
	clock := newFakeClock()
	relay := newTestRelay(t, always(status(http.StatusServiceUnavailable)))
	c := breakerClient(clock)

	for i := range 3 {
		checkState(t, c, BreakerClosed, true)
		if err := publishOnce(t, c, relay); errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("failure %d: circuit open too early", i+1)
		}
	}
	checkState(t, c, BreakerOpen, false)
	if want := clock.Now().Add(30 * time.Second); !c.BreakerOpenUntil().Equal(want) {
		t.Fatalf("open until %s, want %s", c.BreakerOpenUntil(), want)
	}

	err := publishOnce(t, c, relay)
	if !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("err %v, want ErrCircuitOpen", err)
	}
	e := asError(t, err)
	if !e.Temporary() || e.RetryAfter != 30*time.Second || e.Class != ClassServer {
		t.Errorf("circuit error: temporary %t retry after %s class %s", e.Temporary(), e.RetryAfter, e.Class)
	}
	if class, msg := Classify(err); class != ClassUnknown || !strings.Contains(msg, "paused") || !strings.Contains(msg, "503") {
		t.Errorf("Classify: %s %q", class, msg)
	}
	if n := len(relay.requests()); n != 3 {
		t.Fatalf("relay saw %d requests while the breaker was open, want 3", n)
	}

	clock.Advance(30 * time.Second)
	checkState(t, c, BreakerHalfOpen, true)
	if !c.BreakerOpenUntil().IsZero() {
		t.Error("BreakerOpenUntil set while half-open")
	}
	relay.setAnswer(succeed)
	if err := publishOnce(t, c, relay); err != nil {
		t.Fatalf("trial: %v", err)
	}
	checkState(t, c, BreakerClosed, true)
	if n := len(relay.requests()); n != 4 {
		t.Fatalf("relay saw %d requests, want 4", n)
	}
}

func TestBreakerTrialFailureReopensLonger(t *testing.T) {
	clock := newFakeClock()
	relay := newTestRelay(t, always(status(http.StatusBadGateway)))
	c := breakerClient(clock)
	for range 3 {
		_ = publishOnce(t, c, relay)
	}
	// Each failed trial doubles the cool-down, up to the cap.
	for _, want := range []time.Duration{60 * time.Second, 100 * time.Second, 100 * time.Second} {
		clock.Advance(c.BreakerOpenUntil().Sub(clock.Now()))
		checkState(t, c, BreakerHalfOpen, true)
		if err := publishOnce(t, c, relay); err == nil || errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("trial: %v", err)
		}
		checkState(t, c, BreakerOpen, false)
		if got := c.BreakerOpenUntil().Sub(clock.Now()); got != want {
			t.Fatalf("reopened for %s, want %s", got, want)
		}
	}
	// A success resets the cool-down.
	clock.Advance(c.BreakerOpenUntil().Sub(clock.Now()))
	relay.setAnswer(succeed)
	if err := publishOnce(t, c, relay); err != nil {
		t.Fatal(err)
	}
	relay.setAnswer(always(status(http.StatusBadGateway)))
	for range 3 {
		_ = publishOnce(t, c, relay)
	}
	if got := c.BreakerOpenUntil().Sub(clock.Now()); got != 30*time.Second {
		t.Fatalf("opened for %s after a success, want the initial 30s", got)
	}
}

func TestBreakerHonoursRelayBackOff(t *testing.T) {
	clock := newFakeClock()
	relay := newTestRelay(t, always(fault(http.StatusServiceUnavailable, relayproto.Fault{Message: "maintenance", CanRetry: true, BackOffTimeInMilliseconds: 10 * 60 * 1000})))
	c := breakerClient(clock)
	for range 3 {
		_ = publishOnce(t, c, relay)
	}
	if got := c.BreakerOpenUntil().Sub(clock.Now()); got != 10*time.Minute {
		t.Fatalf("opened for %s, want the relay's 10m", got)
	}
}

func TestBreakerOnlyOneTrialWhileHalfOpen(t *testing.T) {
	clock := newFakeClock()
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	relay := newTestRelay(t, always(status(http.StatusServiceUnavailable)))
	c := breakerClient(clock)
	for range 3 {
		_ = publishOnce(t, c, relay)
	}
	clock.Advance(30 * time.Second)
	relay.setAnswer(func(_ int, w http.ResponseWriter, _ *http.Request, req relayproto.Request) {
		arrived <- struct{}{}
		<-release
		deliverAll(w, req)
	})
	trialDone := make(chan error, 1)
	go func() { trialDone <- publishOnce(t, c, relay) }()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("trial request never arrived")
	}
	checkState(t, c, BreakerHalfOpen, false)
	if err := publishOnce(t, c, relay); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("second request during the trial: %v, want ErrCircuitOpen", err)
	}
	close(release)
	if err := <-trialDone; err != nil {
		t.Fatalf("trial: %v", err)
	}
	checkState(t, c, BreakerClosed, true)
}

func TestBreakerCountsOnlyConsecutiveTemporaryFailures(t *testing.T) {
	clock := newFakeClock()
	relay := newTestRelay(t, always(status(http.StatusServiceUnavailable)))
	c := breakerClient(clock)
	steps := []func(w http.ResponseWriter){
		status(http.StatusServiceUnavailable),
		status(http.StatusServiceUnavailable),
		fault(http.StatusBadRequest, relayproto.Fault{Message: "bad batch"}), // the relay is up: resets the count
		status(http.StatusServiceUnavailable),
		status(http.StatusServiceUnavailable),
	}
	for _, s := range steps {
		relay.setAnswer(always(s))
		_ = publishOnce(t, c, relay)
	}
	checkState(t, c, BreakerClosed, true)

	// A token failure sends nothing and says nothing about the relay.
	noToken := New(Config{Tokens: staticTokens{err: errors.New("no key")}, BreakerFailures: 1, Now: clock.Now})
	_ = publishOnce(t, noToken, relay)
	checkState(t, noToken, BreakerClosed, true)

	relay.setAnswer(always(status(http.StatusServiceUnavailable)))
	_ = publishOnce(t, c, relay)
	checkState(t, c, BreakerOpen, false)
}

func TestBreakerDisabled(t *testing.T) {
	relay := newTestRelay(t, always(status(http.StatusServiceUnavailable)))
	c := New(Config{Tokens: staticTokens{token: "t"}, BreakerFailures: -1})
	for range 20 {
		if err := publishOnce(t, c, relay); errors.Is(err, ErrCircuitOpen) {
			t.Fatal("disabled breaker opened")
		}
	}
	checkState(t, c, BreakerClosed, true)
}

func TestBreakerStateString(t *testing.T) {
	for s, want := range map[BreakerState]string{BreakerClosed: "closed", BreakerOpen: "open", BreakerHalfOpen: "half-open", 7: "BreakerState(7)"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", int(s), got, want)
		}
	}
}

func TestResetBreakerClosesIt(t *testing.T) {
	clock := newFakeClock()
	relay := newTestRelay(t, always(status(http.StatusServiceUnavailable)))
	c := breakerClient(clock)
	for range 3 {
		_ = publishOnce(t, c, relay)
	}
	checkState(t, c, BreakerOpen, false)
	c.ResetBreaker() // the operator changed the relay's Uri
	checkState(t, c, BreakerClosed, true)
	if err := publishOnce(t, c, relay); errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("refused by the breaker after a reset: %v", err)
	}
}

// TestBreakerIgnoresRequestsTheGateStopped: requests the write gate
// stopped on our side say nothing about the relay, however many.
func TestBreakerIgnoresRequestsTheGateStopped(t *testing.T) {
	relay := newTestRelay(t, succeed)
	held := errors.New("held")
	var closed atomic.Bool
	closed.Store(true)
	c := New(Config{Tokens: staticTokens{token: "t"}, BreakerFailures: 3, WriteGate: func() error {
		if closed.Load() {
			return held
		}
		return nil
	}})
	for i := range 5 {
		if err := publishOnce(t, c, relay); err == nil || errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("request %d with the gate closed: err %v, want a failed write", i+1, err)
		}
	}
	checkState(t, c, BreakerClosed, true)
	if n := len(relay.requests()); n != 0 {
		t.Fatalf("relay saw %d requests while the gate was closed", n)
	}
	closed.Store(false)
	if err := publishOnce(t, c, relay); err != nil {
		t.Fatalf("gate open: %v", err)
	}
}
