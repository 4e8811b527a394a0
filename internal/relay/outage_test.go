package relay

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

func TestServiceDown(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"503", &providers.Error{Status: 503, Retryable: true}, true},
		{"500", &providers.Error{Status: 500, Retryable: true}, true},
		{"no connection", &providers.Error{Retryable: true, Err: errors.New("connection refused")}, true},
		{"wrapped", fmt.Errorf("sending: %w", &providers.Error{Status: 502, Retryable: true}), true},
		{"503 with its own Retry-After", &providers.Error{Status: 503, Retryable: true, RetryAfter: time.Minute}, false},
		{"429: slow down, not down", &providers.Error{Status: 429, Retryable: true}, false},
		{"410 gone", &providers.Error{Status: 410, Gone: true}, false},
		{"403 app fault", &providers.Error{Status: 403, AppFault: true}, false},
		{"not retryable", errors.New("unclassified"), false},
		{"delivered", nil, false},
	} {
		if got := serviceDown(tt.err); got != tt.want {
			t.Errorf("%s: serviceDown = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestOutageBackOffGrowsWithTheOutage: while an app's push service fails
// as a whole, "retry" answers carry a back-off of a quarter of the
// outage so far, from a second to RetryBackOff; another app's outage is
// its own; a device the push service asks to slow down gets RetryBackOff;
// any answer of the push service ends the outage.
func TestOutageBackOffGrowsWithTheOutage(t *testing.T) {
	var down atomic.Bool
	mail, other := newRecorder("apns"), newRecorder("apns")
	mail.answer = func(b providers.Badge) error {
		switch {
		case b.Device == "throttled":
			return &providers.Error{Provider: "apns", Status: 429, Reason: "TooManyRequests", Retryable: true}
		case down.Load():
			return &providers.Error{Provider: "apns", Status: 503, Reason: "ServiceUnavailable", Retryable: true}
		}
		return nil
	}
	other.answer = func(providers.Badge) error {
		return &providers.Error{Provider: "apns", Status: 500, Reason: "InternalServerError", Retryable: true}
	}
	h := newHarness(t, Config{RetryBackOff: 30 * time.Second}, map[string]providers.Provider{"mail": mail, "other": other})
	start := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	var elapsed atomic.Int64
	h.srv.now = func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	send := func(app, device string) relayproto.DeviceResult {
		t.Helper()
		resp := h.publish(relayproto.Request{Notifications: []relayproto.Notification{notification("n", 1, app, device)}}).response(t)
		return resp.Results[0].Devices[0]
	}

	down.Store(true)
	for _, step := range []struct {
		at           time.Duration
		app, device  string
		class        relayproto.Class
		backOffMilli int64
	}{
		{0, "mail", "a", relayproto.ClassTransient, 1000},
		{2 * time.Second, "mail", "a", relayproto.ClassTransient, 1000},
		{20 * time.Second, "mail", "a", relayproto.ClassTransient, 5000},
		{20 * time.Second, "other", "b", relayproto.ClassTransient, 1000},
		{40 * time.Second, "mail", "a", relayproto.ClassTransient, 10000},
		{10 * time.Minute, "mail", "a", relayproto.ClassTransient, 30000},
	} {
		elapsed.Store(int64(step.at))
		got := send(step.app, step.device)
		if got.Class != step.class || got.BackOffTimeInMilliseconds != step.backOffMilli {
			t.Errorf("%s into the outage, %s/%s: %s with back-off %d ms (%s), want %s with %d ms",
				step.at, step.app, step.device, got.Class, got.BackOffTimeInMilliseconds, got.Reason, step.class, step.backOffMilli)
		}
	}

	// A device the push service asks to slow down (sent as the next
	// trial): it answered, so its outage is over.
	elapsed.Add(int64(outageTrialEvery))
	if got := send("mail", "throttled"); got.Class != relayproto.ClassTransient || got.BackOffTimeInMilliseconds != 30000 {
		t.Errorf("a device asked to slow down: %+v, want transient with RetryBackOff", got)
	}
	if got := send("mail", "a"); got.BackOffTimeInMilliseconds != 1000 {
		t.Errorf("after the push service answered: back-off %d ms, want a new outage's 1000", got.BackOffTimeInMilliseconds)
	}

	down.Store(false)
	if got := send("mail", "a"); got.Class != relayproto.ClassDelivered {
		t.Fatalf("after the push service came back: %+v", got)
	}
	down.Store(true)
	elapsed.Store(int64(11 * time.Minute))
	if got := send("mail", "a"); got.BackOffTimeInMilliseconds != 1000 {
		t.Errorf("a new outage after a delivery: back-off %d ms, want 1000", got.BackOffTimeInMilliseconds)
	}
}

// TestOutageLetsATrialASecondThrough: once an app's push service has been
// down a second, one send a second reaches it and the others are answered
// "retry" at once, with the outage's back-off, without being sent; another
// app's sends are not held; the first answer ends the outage and every
// send goes through again.
func TestOutageLetsATrialASecondThrough(t *testing.T) {
	var down atomic.Bool
	mail, other := newRecorder("apns"), newRecorder("apns")
	mail.answer = func(providers.Badge) error {
		if down.Load() {
			return &providers.Error{Provider: "apns", Status: 503, Reason: "ServiceUnavailable", Retryable: true}
		}
		return nil
	}
	h := newHarness(t, Config{RetryBackOff: 30 * time.Second}, map[string]providers.Provider{"mail": mail, "other": other})
	start := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	var elapsed atomic.Int64
	h.srv.now = func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	send := func(app string) relayproto.DeviceResult {
		t.Helper()
		resp := h.publish(relayproto.Request{Notifications: []relayproto.Notification{notification("n", 1, app, "a")}}).response(t)
		return resp.Results[0].Devices[0]
	}

	down.Store(true)
	for _, step := range []struct {
		at           time.Duration
		app          string
		sent         bool // reached the push service
		class        relayproto.Class
		backOffMilli int64
	}{
		{0, "mail", true, relayproto.ClassTransient, 1000},
		{500 * time.Millisecond, "mail", true, relayproto.ClassTransient, 1000}, // down less than a second: every send goes
		{1200 * time.Millisecond, "mail", false, relayproto.ClassTransient, 1000},
		{1500 * time.Millisecond, "mail", true, relayproto.ClassTransient, 1000}, // a second after the last send: a trial
		{1600 * time.Millisecond, "mail", false, relayproto.ClassTransient, 1000},
		{1600 * time.Millisecond, "other", true, relayproto.ClassDelivered, 0},
		{2400 * time.Millisecond, "mail", false, relayproto.ClassTransient, 1000},
		{20 * time.Second, "mail", true, relayproto.ClassTransient, 5000},
		{20*time.Second + 100*time.Millisecond, "mail", false, relayproto.ClassTransient, 5025},
	} {
		elapsed.Store(int64(step.at))
		before := len(mail.sent()) + len(other.sent())
		got := send(step.app)
		if sent := len(mail.sent())+len(other.sent()) > before; sent != step.sent {
			t.Errorf("%s into the outage, %s: sent to the push service = %v, want %v (%s)", step.at, step.app, sent, step.sent, got.Reason)
		}
		if got.Class != step.class || got.BackOffTimeInMilliseconds != step.backOffMilli {
			t.Errorf("%s into the outage, %s: %s with back-off %d ms (%s), want %s with %d ms",
				step.at, step.app, got.Class, got.BackOffTimeInMilliseconds, got.Reason, step.class, step.backOffMilli)
		}
	}
	if got := send("mail"); !strings.Contains(got.Reason, "not sent: the push service has failed for 20s") {
		t.Errorf("a held send's reason: %q", got.Reason)
	}
	if n := testutil.ToFloat64(h.srv.metrics.outageHeld.WithLabelValues("fabrikam.com", "mail", "apns")); n != 5 {
		t.Errorf("pushproxy_relay_outage_held_total = %v, want 5", n)
	}
	if got, want := downSeconds(t, h), `{app_id="mail",organization="fabrikam.com"} 20.1`; got != want {
		t.Errorf("pushproxy_relay_push_service_down_seconds = %s, want %s", got, want)
	}
	// No send met the failure for a minute: nobody knows whether it is
	// back, and the gauge says nothing.
	elapsed.Store(int64(81 * time.Second))
	if got := downSeconds(t, h); got != "" {
		t.Errorf("a minute after the last failure: pushproxy_relay_push_service_down_seconds = %s, want none", got)
	}

	// Back: the next trial is delivered, and the outage is over.
	down.Store(false)
	elapsed.Store(int64(82 * time.Second))
	if got := send("mail"); got.Class != relayproto.ClassDelivered {
		t.Fatalf("the trial after the push service came back: %+v", got)
	}
	if got := send("mail"); got.Class != relayproto.ClassDelivered {
		t.Errorf("a send right after the outage: %+v, want delivered", got)
	}
	if got := downSeconds(t, h); got != "" {
		t.Errorf("after the outage: pushproxy_relay_push_service_down_seconds = %s, want none", got)
	}
}

// downSeconds returns the series of pushproxy_relay_push_service_down_seconds,
// each as {labels} value, or "".
func downSeconds(t *testing.T, h *harness) string {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		if f.GetName() != "pushproxy_relay_push_service_down_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out = append(out, fmt.Sprintf("{%s} %g", strings.Join(labels, ","), m.GetGauge().GetValue()))
		}
	}
	return strings.Join(out, "; ")
}

// TestWebPushIsNotHeldByAnOutage: a Web Push app's subscriptions reach
// many push services, so its sends all go while one of them fails; only
// their back-off grows with the outage.
func TestWebPushIsNotHeldByAnOutage(t *testing.T) {
	web := newRecorder("webpush")
	web.answer = func(providers.Badge) error {
		return &providers.Error{Provider: "webpush", Status: 503, Reason: "ServiceUnavailable", Retryable: true}
	}
	h := newHarness(t, Config{RetryBackOff: 30 * time.Second}, map[string]providers.Provider{"web": web})
	start := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	var elapsed atomic.Int64
	h.srv.now = func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	for i, at := range []time.Duration{0, 1500 * time.Millisecond, 1600 * time.Millisecond, 20 * time.Second, 20*time.Second + 100*time.Millisecond} {
		elapsed.Store(int64(at))
		resp := h.publish(relayproto.Request{Notifications: []relayproto.Notification{notification("n", 1, "web", "a")}}).response(t)
		if got := resp.Results[0].Devices[0]; got.Class != relayproto.ClassTransient || strings.Contains(got.Reason, "not sent") {
			t.Errorf("%s into the outage: %+v, want a transient answer of the push service", at, got)
		}
		if n := len(web.sent()); n != i+1 {
			t.Errorf("%s into the outage: %d sends reached the push service, want %d", at, n, i+1)
		}
	}
}
