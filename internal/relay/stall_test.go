package relay

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// TestStallGuardRefusesWhatWaitedThroughAPause has the guard's process
// "not run" for 2 s (its last tick set back, as a stop would leave it):
// requests read then are refused, and so are those read in the grace
// after the next tick notices the gap; then none are.
func TestStallGuardRefusesWhatWaitedThroughAPause(t *testing.T) {
	g := newStallGuard()
	if g.stalled() {
		t.Fatal("a guard that does not watch refuses requests")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var gaps atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.watch(ctx, func(gap time.Duration) { gaps.Store(int64(gap)) })
	}()
	waitFor(t, "the guard watching", func() bool { return g.last.Load() != 0 })
	if g.stalled() {
		t.Fatal("a guard ticking on time refuses requests")
	}
	g.last.Add(-int64(2 * time.Second)) // the process did not run for 2 s
	if !g.stalled() {
		t.Fatal("a request read after a pause, before the next tick, is not refused")
	}
	waitFor(t, "the gap noticed", func() bool { return gaps.Load() != 0 })
	if gap := time.Duration(gaps.Load()); gap < 2*time.Second {
		t.Fatalf("gap reported as %s, want at least 2s", gap)
	}
	if !g.stalled() {
		t.Fatal("a request read in the grace after a pause is not refused")
	}
	waitFor(t, "the grace over", func() bool { return !g.stalled() })
	cancel()
	<-done
	if g.stalled() {
		t.Fatal("a guard that stopped watching refuses requests")
	}
}

// TestAPauseHoldsBackWhatWasReadBeforeIt reads one request for two
// devices into a relay whose lane sends one at a time: the first send is
// at the push service, the second waits for the slot, when the relay
// "does not run" for 2 s. The first, sent before the pause, is delivered;
// the second must not go out after it (its sender may have sent a newer
// count through another replica meanwhile): it is answered retry and the
// push service never sees it.
func TestAPauseHoldsBackWhatWasReadBeforeIt(t *testing.T) {
	apns := newRecorder("apns")
	apns.gate = make(chan struct{})
	apns.started = make(chan providers.Badge, 2)
	h := watchingStalls(t, Config{ProviderLimit: Limit{Concurrency: 1, Timeout: time.Minute}}, map[string]providers.Provider{"mail": apns})

	answered := make(chan reply, 1)
	go func() {
		answered <- h.publish(relayproto.Request{Notifications: []relayproto.Notification{notification("n", 7, "mail", "first", "mail", "second")}})
	}()
	if b := <-apns.started; b.Device != "first" {
		t.Fatalf("the first send is to %q", b.Device)
	}
	h.pause()
	close(apns.gate)
	resp := (<-answered).response(t)

	devices := resp.Results[0].Devices
	if devices[0].Class != relayproto.ClassDelivered {
		t.Errorf("the send made before the pause: %+v, want delivered", devices[0])
	}
	if d := devices[1]; d.Class != relayproto.ClassTransient || d.BackOffTimeInMilliseconds != pausedBackOff.Milliseconds() || !strings.Contains(d.Reason, "paused") {
		t.Errorf("the send held back by the pause: %+v, want transient with a %s back-off, saying why", d, pausedBackOff)
	}
	if sent := apns.sent(); len(sent) != 1 || sent[0].Device != "first" {
		t.Errorf("the push service got %+v, want only the first device's badge", sent)
	}
}

// TestAPausedRelayRefusesAndClosesTheConnection: a request read while
// the relay has just paused is refused with a 503 to retry, and its
// connection is closed, so that the retry dials again (behind a balancer,
// perhaps to a replica that did not pause); nothing is sent.
func TestAPausedRelayRefusesAndClosesTheConnection(t *testing.T) {
	apns := newRecorder("apns")
	h := watchingStalls(t, Config{}, map[string]providers.Provider{"mail": apns})
	h.pause()

	r := h.publish(relayproto.Request{Notifications: []relayproto.Notification{notification("n", 7, "mail", "a")}})
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", r.status, r.body)
	}
	if f := r.fault(t); !f.CanRetry || f.BackOffTimeInMilliseconds != pausedBackOff.Milliseconds() {
		t.Errorf("fault %+v, want canRetry with a %s back-off", f, pausedBackOff)
	}
	if got := r.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After: %q, want 1", got)
	}
	if !r.closed {
		t.Error("the connection of a request refused after a pause stays open")
	}
	if sent := apns.sent(); len(sent) != 0 {
		t.Errorf("the push service got %+v", sent)
	}
}

// TestAFailureAcrossAPauseIsNoOutage: a send is at the push service when
// the relay pauses, and fails (timed out, or its connection did, while
// the relay did not run). That tells nothing of the push service: the
// device is answered retry, and no outage begins, which would hold the
// app's next sends.
func TestAFailureAcrossAPauseIsNoOutage(t *testing.T) {
	apns := newRecorder("apns")
	apns.gate = make(chan struct{})
	apns.started = make(chan providers.Badge, 1)
	apns.answer = func(providers.Badge) error {
		return &providers.Error{Provider: "apns", Status: 503, Reason: "ServiceUnavailable", Retryable: true}
	}
	h := watchingStalls(t, Config{}, map[string]providers.Provider{"mail": apns})
	answered := make(chan reply, 1)
	go func() {
		answered <- h.publish(relayproto.Request{Notifications: []relayproto.Notification{notification("n", 7, "mail", "a")}})
	}()
	<-apns.started
	h.pause()
	close(apns.gate)
	if d := (<-answered).response(t).Results[0].Devices[0]; d.Class != relayproto.ClassTransient {
		t.Errorf("the send that failed across the pause: %+v, want transient", d)
	}
	if ages := h.srv.outages.ages(h.srv.now()); len(ages) != 0 {
		t.Errorf("outages %v after a failure across a pause, want none", ages)
	}
}

// pausing is a relay harness whose stall guard watches.
type pausing struct{ *harness }

// watchingStalls starts a relay as newHarness does, with its stall guard
// watching until t ends.
func watchingStalls(t *testing.T, cfg Config, apps map[string]providers.Provider) pausing {
	t.Helper()
	h := newHarness(t, cfg, apps)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go h.srv.WatchStalls(ctx)
	waitFor(t, "the guard watching", func() bool { return h.srv.stall.last.Load() != 0 })
	return pausing{h}
}

// pause has the relay's process "not run" for 2 s: its last tick set
// back, as a stop would leave it.
func (p pausing) pause() { p.srv.stall.last.Add(-int64(2 * time.Second)) }
