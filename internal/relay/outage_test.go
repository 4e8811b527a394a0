package relay

import (
	"context"
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

// webRecorder is a recorder of a Web Push app: its devices name their
// push service, "host/device", as a subscription's endpoint does.
type webRecorder struct{ *recorder }

func (w webRecorder) Service(b providers.Badge) (string, bool) {
	host, _, ok := strings.Cut(b.Device, "/")
	return host, ok
}

// TestWebPushOutagesArePerPushService: a Web Push app's subscriptions
// reach many push services. While one of them fails, its sends are held
// to a trial a second, and the app's sends to another go, all of them; the
// gauge shows the app's longest outage. A send queued behind the app's
// sends to the failing service (its share full) tells nothing of its own.
func TestWebPushOutagesArePerPushService(t *testing.T) {
	web := webRecorder{newRecorder("webpush")}
	web.answer = func(b providers.Badge) error {
		if strings.HasPrefix(b.Device, "down.example/") {
			return &providers.Error{Provider: "webpush", Status: 503, Reason: "ServiceUnavailable", Retryable: true}
		}
		return nil
	}
	h := newHarness(t, Config{RetryBackOff: 30 * time.Second}, map[string]providers.Provider{"web": web})
	start := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	var elapsed atomic.Int64
	h.srv.now = func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	for _, step := range []struct {
		at       time.Duration
		downSent bool // the send to the failing push service reached it
	}{
		{0, true},
		{1500 * time.Millisecond, true}, // a trial
		{1600 * time.Millisecond, false},
		{20 * time.Second, true},
		{20*time.Second + 100*time.Millisecond, false},
	} {
		elapsed.Store(int64(step.at))
		sent := len(web.sent())
		resp := h.publish(relayproto.Request{Notifications: []relayproto.Notification{
			notification("n", 1, "web", "down.example/a", "web", "up.example/b"),
		}}).response(t)
		down, up := resp.Results[0].Devices[0], resp.Results[0].Devices[1]
		if got := len(web.sent()) - sent; got != 1+boolInt(step.downSent) {
			t.Errorf("%s into the outage: %d sends reached push services, want %d", step.at, got, 1+boolInt(step.downSent))
		}
		if down.Class != relayproto.ClassTransient || strings.Contains(down.Reason, "not sent") == step.downSent {
			t.Errorf("%s into the outage, the failing push service: %+v, want transient, sent %v", step.at, down, step.downSent)
		}
		if up.Class != relayproto.ClassDelivered {
			t.Errorf("%s into the outage, another push service of the app: %+v, want delivered", step.at, up)
		}
	}
	if n := testutil.ToFloat64(h.srv.metrics.outageHeld.WithLabelValues("fabrikam.com", "web", "webpush")); n != 2 {
		t.Errorf("pushproxy_relay_outage_held_total = %v, want 2", n)
	}
	if got, want := downSeconds(t, h), `{app_id="web",organization="fabrikam.com"} 20.1`; got != want {
		t.Errorf("pushproxy_relay_push_service_down_seconds = %s, want %s", got, want)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestFailedAsAWhole(t *testing.T) {
	apns := outageKey{appKey: appKey{"fabrikam.com", "mail"}}
	web := outageKey{appKey: appKey{"fabrikam.com", "web"}, service: "push.example"}
	unavailable := &providers.Error{Status: 503, Retryable: true}
	for _, tt := range []struct {
		name               string
		key                outageKey
		err                error
		timedOut, busy, ok bool
	}{
		{"503", apns, unavailable, false, false, true},
		{"503, Web Push", web, unavailable, false, false, true},
		{"no answer to the send", apns, errNoAnswer, true, false, true},
		{"no answer to the send, Web Push", web, errNoAnswer, true, false, true},
		{"the provider's own deadline, Web Push", web, context.DeadlineExceeded, true, false, true},
		{"no lane slot in time", apns, errLaneTimeout, true, false, true},
		{"no lane slot in time, Web Push", web, errLaneTimeout, true, false, false},
		{"the app's share full", apns, errShareBusy, false, true, true},
		{"the app's share full, Web Push", web, errShareBusy, false, true, false},
		{"delivered", web, nil, false, false, false},
		{"gone", web, &providers.Error{Status: 410, Gone: true}, false, false, false},
	} {
		if got := failedAsAWhole(tt.key, tt.err, tt.timedOut, tt.busy); got != tt.ok {
			t.Errorf("%s: failedAsAWhole = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

// TestOutagesForgetTheStale: an outage no send has met for ten minutes is
// dropped at the next failure of any push service (a sweep at most every
// ten minutes), so that the push services a Web Push app's subscriptions
// ever named do not pile up; one met again begins anew.
func TestOutagesForgetTheStale(t *testing.T) {
	o := newOutages(30 * time.Second)
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	key := func(host string) outageKey {
		return outageKey{appKey: appKey{"fabrikam.com", "web"}, service: host}
	}
	o.failed(key("a.example"), t0)
	o.failed(key("b.example"), t0.Add(5*time.Minute))
	o.failed(key("c.example"), t0.Add(10*time.Minute))
	if _, ok := o.down[key("a.example")]; ok || len(o.down) != 2 {
		t.Fatalf("outages after ten minutes: %v, want b and c", o.down)
	}
	// The sweep runs once every ten minutes: b is stale at 16 min, still
	// kept until the next.
	o.failed(key("c.example"), t0.Add(16*time.Minute))
	if _, ok := o.down[key("b.example")]; !ok {
		t.Fatal("b dropped before the next sweep")
	}
	if _, began := o.failed(key("a.example"), t0.Add(17*time.Minute)); !began {
		t.Fatal("a push service failing again after it was forgotten did not begin an outage")
	}
}
