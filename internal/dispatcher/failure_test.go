package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// TestThreeDispatchersOneDies runs three dispatchers on separate
// connections, kills one without any goodbye in the middle of the stream,
// and checks that every badge ends right and that no device ever saw its
// count go backwards (each user's events carry increasing counts).
func TestThreeDispatchersOneDies(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(6), brokertest.WithListen())
	e.enableProxy()
	const users = 24
	var names []string
	for i := range users {
		names = append(names, userName(i))
	}
	e.subscribe(names...)

	var owners []owner
	for i := range 3 {
		owners = append(owners, e.startOwner(t, "d"+string(rune('a'+i)), func(cfg *dispatcher.Config) {
			cfg.Coalesce.Window, cfg.Coalesce.MaxDelay = 300*time.Millisecond, time.Second
		}))
	}
	// Wait until the partitions are shared out.
	waitFor(t, "three dispatchers sharing the partitions", func() bool {
		for _, o := range owners {
			if metricValue(t, o.run.reg, "pushproxy_dispatcher_partitions_owned") != 2 {
				return false
			}
		}
		return true
	})

	next := make([]int, users)
	published := 0
	publishRound := func() {
		var evs []events.Event
		for i, u := range names {
			next[i]++
			evs = append(evs, newEvent(u, events.KindNew, 1, events.IntPtr(next[i])))
		}
		e.publish(evs...)
		published += len(evs)
	}
	applied := func() float64 {
		n := 0.0
		for _, o := range owners {
			n += metricValue(t, o.run.reg, "pushproxy_dispatcher_events_consumed_total", "result", "applied")
		}
		return n
	}
	for range 10 {
		publishRound()
	}
	// Kill dispatcher b while it holds events in its coalescing window:
	// close its connection abruptly, then stop it.
	waitFor(t, "the first rounds applied", func() bool { return applied() == float64(published) })
	owners[1].kill()
	for range 10 {
		publishRound()
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "the survivors taking over", func() bool {
		return metricValue(t, owners[0].run.reg, "pushproxy_dispatcher_partitions_owned")+metricValue(t, owners[2].run.reg, "pushproxy_dispatcher_partitions_owned") == 6
	})
	for i, u := range names {
		want := next[i]
		waitFor(t, "final badge of "+u, func() bool { return e.lastPushed(u) == want })
	}
	for _, u := range names {
		p := e.relay.pushes(deviceOf(u))
		for i := 1; i < len(p); i++ {
			if p[i] < p[i-1] {
				t.Fatalf("%s saw its count go backwards: %v", u, p)
			}
		}
	}
	// The sent records agree: per user, covered sequences only grow.
	last := map[string]uint64{}
	for _, m := range streamMessages(t, e.conn.JS, broker.StreamSent) {
		var rec pushlog.SentRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.LastSeq < last[rec.UserKey] {
			t.Fatalf("user %s: a push covering up to %d recorded after one covering up to %d", rec.UserKey, rec.LastSeq, last[rec.UserKey])
		}
		last[rec.UserKey] = rec.LastSeq
	}
	if n := metricValue(t, owners[0].run.reg, "pushproxy_dispatcher_takeover_events_read_total") + metricValue(t, owners[2].run.reg, "pushproxy_dispatcher_takeover_events_read_total"); n == 0 {
		t.Fatal("the survivors read no unacknowledged event from the stream: the dead dispatcher held no events, so the takeover was not exercised")
	}
}

// TestRelayDownThenBack keeps the relay down while events arrive, then
// brings it back: nothing is lost and each user gets one push.
func TestRelayDownThenBack(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(2))
	e.enableProxy()
	down := true
	e.relay.setAnswer(func(int) answer {
		if down {
			return answer{status: http.StatusServiceUnavailable}
		}
		return answer{status: http.StatusOK}
	})
	const users = 15
	var names []string
	for i := range users {
		names = append(names, userName(i))
	}
	e.subscribe(names...)
	reg := prometheus.NewRegistry()
	e.start(e.conn, testConfig(), reg)

	var evs []events.Event
	want := map[string]int{}
	for round := 1; round <= 4; round++ {
		for _, u := range names {
			evs = append(evs, newEvent(u, events.KindNew, 1, nil))
			want[u] = round
		}
	}
	e.publish(evs...)
	waitFor(t, "every event applied", func() bool {
		return metricValue(t, reg, "pushproxy_dispatcher_events_consumed_total", "result", "applied") == float64(len(evs))
	})
	waitFor(t, "the breaker to open", func() bool { return metricValue(t, reg, "pushproxy_dispatcher_relay_healthy") == 0 })
	if v := metricValue(t, reg, "pushproxy_dispatcher_dead_letters_total"); v != 0 {
		t.Fatalf("%v dead letters while the relay was down; want the pushes held", v)
	}
	// While it is down, each user holds only its latest event; the state
	// has the others, which are acknowledged.
	waitFor(t, "one held event per user", func() bool {
		pending, ack := ackPending(t, e.conn.JS)
		return pending == 0 && ack == users
	})
	e.relay.mu.Lock()
	down = false
	e.relay.mu.Unlock()

	for _, u := range names {
		waitFor(t, "the final count of "+u, func() bool { return e.lastPushed(u) == want[u] })
	}
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
	for _, u := range names {
		if p := e.relay.pushes(deviceOf(u)); len(p) != 1 {
			t.Fatalf("%s got pushes %v after the relay came back, want one", u, p)
		}
	}
}

// TestBackOffHonoured has the relay answer 503 with Retry-After, 429 with a
// fault's back-off and a retryable fault with a back-off before accepting:
// the retries wait at least that long.
func TestBackOffHonoured(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	dave := userName(5)
	e.subscribe(dave)
	waits := []time.Duration{time.Second, 400 * time.Millisecond, 300 * time.Millisecond}
	e.relay.setAnswer(func(n int) answer {
		switch n {
		case 1:
			return answer{status: http.StatusServiceUnavailable, header: http.Header{"Retry-After": {"1"}}}
		case 2:
			return answer{status: http.StatusTooManyRequests, fault: &relayproto.Fault{Message: "slow down", CanRetry: true, BackOffTimeInMilliseconds: 400}}
		case 3:
			return answer{status: http.StatusInternalServerError, fault: &relayproto.Fault{Message: "busy", CanRetry: true, BackOffTimeInMilliseconds: 300}}
		}
		return answer{status: http.StatusOK}
	})
	cfg := testConfig()
	cfg.Retry.MaxElapsedTime = 20 * time.Second
	e.start(e.conn, cfg)
	e.publish(newEvent(dave, events.KindNew, 1, events.IntPtr(7)))
	waitFor(t, "the push after the retries", func() bool { return e.lastPushed(dave) == 7 })
	at := e.relay.arrivalTimes()
	if len(at) < 4 {
		t.Fatalf("%d requests, want 4", len(at))
	}
	for i, w := range waits {
		if gap := at[i+1].Sub(at[i]); gap < w {
			t.Errorf("retry %d came %s after the failure, want at least %s", i+1, gap, w)
		}
	}
}

func TestGoneDeviceLosesItsSubscription(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	erin := userName(6)
	e.subscribe(erin)
	second := subscriptions.Subscription{Tenant: tenant, User: erin, AppID: "com.example.mail", DeviceID: "old-phone", Platform: subscriptions.PlatformFCM}
	if _, _, err := e.subs.Put(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	e.relay.setAnswer(func(int) answer {
		return answer{status: http.StatusOK, device: func(_ relayproto.Notification, r relayproto.Recipient) relayproto.DeviceResult {
			st := relayproto.DeviceDelivered
			if r.DeviceID == "old-phone" {
				st = relayproto.DeviceGone
			}
			return relayproto.DeviceResult{AppID: r.AppID, DeviceID: r.DeviceID, Status: st, Reason: "Unregistered"}
		}}
	})
	reg := prometheus.NewRegistry()
	e.start(e.conn, testConfig(), reg)
	e.publish(newEvent(erin, events.KindNew, 1, events.IntPtr(2)))
	waitFor(t, "the push to the live device", func() bool { return e.lastPushed(erin) == 2 })
	waitFor(t, "the gone device's subscription removed", func() bool {
		subs, err := e.subs.List(context.Background(), tenant, erin)
		return err == nil && len(subs) == 1 && subs[0].DeviceID == deviceOf(erin)
	})
	if v := metricValue(t, reg, "pushproxy_dispatcher_devices_removed_total", "status", "gone"); v != 1 {
		t.Fatalf("devices removed = %v, want 1", v)
	}
}

func TestPoisonEventIsTerminatedAndAdvised(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	frank := userName(7)
	e.subscribe(frank)
	reg := prometheus.NewRegistry()
	e.start(e.conn, testConfig(), reg)

	bad := &nats.Msg{Subject: e.keyer.Subject(tenant, frank), Data: []byte(`{"v":1,"tenant":"fabrikam.com","kind":"exploded"}`), Header: nats.Header{}}
	bad.Header.Set(jetstream.MsgIDHeader, "poison-1")
	if _, err := e.conn.JS.PublishMsg(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	e.publish(newEvent(frank, events.KindNew, 1, events.IntPtr(1)))
	waitFor(t, "the good event pushed", func() bool { return e.lastPushed(frank) == 1 })
	waitFor(t, "a MSG_TERMINATED advisory in ADVISORIES", func() bool {
		for _, m := range streamMessages(t, e.conn.JS, broker.StreamAdvisories) {
			if strings.Contains(m.Subject, "MSG_TERMINATED") && strings.Contains(string(m.Data), `"stream_seq":1`) {
				return true
			}
		}
		return false
	})
	if v := metricValue(t, reg, "pushproxy_dispatcher_events_consumed_total", "result", "invalid"); v != 1 {
		t.Fatalf("invalid events = %v, want 1", v)
	}
	waitFor(t, "every event settled", func() bool { return settled(t, e) })
}

func TestUndeliverableGoesToDeadLetters(t *testing.T) {
	tests := []struct {
		name   string
		answer answer
		reason string
		tune   func(*dispatcher.Config)
	}{
		{"permanent fault", answer{status: http.StatusBadRequest, fault: &relayproto.Fault{Message: "no such app", CanRetry: false}}, pushlog.ReasonPermanent, nil},
		{"retries exhausted", answer{status: http.StatusInternalServerError, fault: &relayproto.Fault{Message: "broken", CanRetry: true}}, pushlog.ReasonExhausted,
			func(c *dispatcher.Config) {
				c.Retry.MaxElapsedTime = 300 * time.Millisecond
				c.Relay.BreakerFailures = -1
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.enableProxy()
			gina := userName(8)
			e.subscribe(gina)
			e.relay.setAnswer(func(int) answer { return tt.answer })
			cfg := testConfig()
			if tt.tune != nil {
				tt.tune(&cfg)
			}
			e.start(e.conn, cfg)
			e.publish(newEvent(gina, events.KindNew, 1, events.IntPtr(3)), newEvent(gina, events.KindNew, 1, events.IntPtr(4)))
			var dl pushlog.DeadLetter
			waitFor(t, "a dead letter", func() bool {
				msgs := streamMessages(t, e.conn.JS, broker.StreamDead)
				if len(msgs) == 0 {
					return false
				}
				if err := json.Unmarshal(msgs[0].Data, &dl); err != nil {
					t.Fatal(err)
				}
				if msgs[0].Subject != pushlog.DeadSubject(e.keyer.UserKey(tenant, gina)) {
					t.Fatalf("dead letter on %s", msgs[0].Subject)
				}
				return true
			})
			if dl.Reason != tt.reason || dl.Attempts < 1 || dl.LastError == "" || dl.User != gina ||
				dl.Notification.Payload.UnseenEmailCount != 4 || len(dl.Notification.Recipients) != 1 {
				t.Fatalf("dead letter %+v", dl)
			}
			if len(dl.Sequences) != 2 || dl.Sequences[0] != 1 || dl.Sequences[1] != 2 {
				t.Fatalf("dead letter sequences %v, want [1 2]", dl.Sequences)
			}
			waitFor(t, "the events acknowledged", func() bool { return settled(t, e) })
		})
	}
}

func TestConfigValidation(t *testing.T) {
	base := testConfig()
	tests := []struct {
		name   string
		change func(*dispatcher.Config)
	}{
		{"short ack wait", func(c *dispatcher.Config) { c.AckWait = 10 * time.Millisecond }},
		{"batch too large", func(c *dispatcher.Config) { c.BatchSize = relayproto.MaxNotificationsPerRequest + 1 }},
		{"no tokens", func(c *dispatcher.Config) { c.Tokens = nil }},
		{"max ack pending below fetch batch", func(c *dispatcher.Config) { c.MaxAckPending = 10; c.FetchBatch = 100 }},
	}
	if err := base.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	for _, tt := range tests {
		c := base
		tt.change(&c)
		if err := c.Validate(); !errors.Is(err, dispatcher.ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v, want ErrInvalidConfig", tt.name, err)
		}
	}
}

// TestBreakerBoundsHeldEvents keeps the relay down and checks that the
// dispatcher stops taking events beyond BreakerHold (plus one fetch batch
// already pulled), then takes the rest once the relay is back.
func TestBreakerBoundsHeldEvents(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(1))
	e.enableProxy()
	down := true
	e.relay.setAnswer(func(int) answer {
		if down {
			return answer{status: http.StatusServiceUnavailable}
		}
		return answer{status: http.StatusOK}
	})
	var names []string
	for i := range 30 {
		names = append(names, userName(i))
	}
	e.subscribe(names...)
	reg := prometheus.NewRegistry()
	cfg := testConfig()
	cfg.BreakerHold, cfg.FetchBatch = 20, 10
	e.start(e.conn, cfg, reg)

	waitFor(t, "the partition taken", func() bool { return metricValue(t, reg, "pushproxy_dispatcher_partitions_owned") == 1 })
	e.publish(newEvent(names[0], events.KindNew, 1, nil))
	waitFor(t, "the breaker to open", func() bool {
		return e.relay.requestCount() >= 5 && metricValue(t, reg, "pushproxy_dispatcher_relay_healthy") == 0
	})
	var evs []events.Event
	want := map[string]int{names[0]: 1}
	for round := 1; round <= 10; round++ {
		for _, u := range names {
			evs = append(evs, newEvent(u, events.KindNew, 1, nil))
			want[u]++
		}
	}
	e.publish(evs...)
	bound := cfg.BreakerHold + cfg.FetchBatch
	waitFor(t, "the dispatcher to take its share", func() bool {
		_, ack := ackPending(t, e.conn.JS)
		return ack >= cfg.BreakerHold
	})
	// Past the pinned TTL and a few breaker cool-downs, it still holds no
	// more than the bound, and the rest waits in the stream.
	for range 3 {
		time.Sleep(time.Second)
		pending, ack := ackPending(t, e.conn.JS)
		if ack > bound || pending == 0 {
			t.Fatalf("relay down: %d events unacknowledged (bound %d), %d waiting in the stream", ack, bound, pending)
		}
	}
	e.relay.mu.Lock()
	down = false
	e.relay.mu.Unlock()
	for _, u := range names {
		waitFor(t, "the final count of "+u, func() bool { return e.lastPushed(u) == want[u] })
	}
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
}

// TestAppFaultKeepsSubscriptions has the relay answer an app fault for
// one app while another app of the same tenant works: no subscription is
// removed, nothing is dead-lettered, only that tenant+app is paused, and
// when the fault is fixed a trial push brings the latest count.
func TestAppFaultKeepsSubscriptions(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	ivan, judy := userName(9), userName(10)
	e.subscribe(ivan)
	other := subscriptions.Subscription{Tenant: tenant, User: judy, AppID: "com.example.calendar", DeviceID: deviceOf(judy), Platform: subscriptions.PlatformFCM}
	if _, _, err := e.subs.Put(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	broken := true
	e.relay.setAnswer(func(int) answer {
		return answer{status: http.StatusOK, device: func(_ relayproto.Notification, r relayproto.Recipient) relayproto.DeviceResult {
			d := relayproto.DeviceResult{AppID: r.AppID, DeviceID: r.DeviceID}
			mu.Lock()
			defer mu.Unlock()
			if broken && r.AppID == "com.example.mail" {
				d.SetClass(relayproto.ClassAppFault)
				d.Reason = "apns: 403 InvalidProviderToken"
				return d
			}
			d.SetClass(relayproto.ClassDelivered)
			return d
		}}
	})
	reg := prometheus.NewRegistry()
	e.start(e.conn, testConfig(), reg)
	for i := 1; i <= 4; i++ {
		e.publish(newEvent(ivan, events.KindNew, 1, events.IntPtr(i)), newEvent(judy, events.KindNew, 1, events.IntPtr(10+i)))
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, "the other app's push", func() bool { return e.lastPushed(judy) == 14 })
	waitFor(t, "the tenant+app paused", func() bool {
		return metricValue(t, reg, "pushproxy_delivery_app_paused", "tenant", tenant, "app_id", "com.example.mail") == 1
	})
	if v := metricValue(t, reg, "pushproxy_delivery_app_paused", "app_id", "com.example.calendar"); v != 0 {
		t.Fatalf("the working app is paused too (%v)", v)
	}
	if v := metricValue(t, reg, "pushproxy_dispatcher_dead_letters_total"); v != 0 {
		t.Fatalf("%v dead letters for an app fault", v)
	}
	if subs, err := e.subs.List(context.Background(), tenant, ivan); err != nil || len(subs) != 1 {
		t.Fatalf("subscriptions after an app fault: %v %v", subs, err)
	}
	// More mail while the app is paused: only the user's latest event
	// stays unacknowledged, however long the fault lasts.
	for i := 5; i <= 12; i++ {
		e.publish(newEvent(ivan, events.KindNew, 1, events.IntPtr(i)))
	}
	waitFor(t, "the paused user's events acknowledged but the latest", func() bool {
		pending, ack := ackPending(t, e.conn.JS)
		return pending == 0 && ack == 1
	})
	mu.Lock()
	broken = false
	mu.Unlock()
	waitFor(t, "the latest count after the fix", func() bool { return e.lastPushed(ivan) == 12 })
	waitFor(t, "the tenant+app resumed", func() bool {
		return metricValue(t, reg, "pushproxy_delivery_app_paused", "app_id", "com.example.mail") == 0
	})
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
}

// TestRelayBackPressureProducesNoDeadLetter has the relay throttle (429
// with a back-off) for longer than the retry budget: the push waits and
// goes out with the latest count; nothing is dead-lettered.
func TestRelayBackPressureProducesNoDeadLetter(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	kim := userName(11)
	e.subscribe(kim)
	until := time.Now().Add(1500 * time.Millisecond)
	e.relay.setAnswer(func(int) answer {
		if time.Now().Before(until) {
			return answer{status: http.StatusTooManyRequests, fault: &relayproto.Fault{Message: "slow down", CanRetry: true, BackOffTimeInMilliseconds: 100}}
		}
		return answer{status: http.StatusOK}
	})
	reg := prometheus.NewRegistry()
	cfg := testConfig()
	cfg.Retry.MaxElapsedTime = 300 * time.Millisecond
	cfg.MaxPushRetries = 1
	e.start(e.conn, cfg, reg)
	e.publish(newEvent(kim, events.KindNew, 1, events.IntPtr(1)))
	time.Sleep(500 * time.Millisecond)
	e.publish(newEvent(kim, events.KindNew, 1, events.IntPtr(2)))
	waitFor(t, "the push after the back-pressure", func() bool { return e.lastPushed(kim) == 2 })
	if p := e.relay.pushes(deviceOf(kim)); len(p) != 1 {
		t.Fatalf("pushes %v, want one with the latest count", p)
	}
	if v := metricValue(t, reg, "pushproxy_dispatcher_dead_letters_total"); v != 0 {
		t.Fatalf("%v dead letters from relay back-pressure", v)
	}
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
}

// TestChangedRelayURIReachesPushesInFlight has the configured relay down
// until its breaker opens; the operator then points the proxy at a working
// relay: the held push goes there at once, without waiting for the old
// relay's breaker to cool down.
func TestChangedRelayURIReachesPushesInFlight(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	e.relay.setAnswer(func(int) answer { return answer{status: http.StatusServiceUnavailable} })
	leo := userName(12)
	e.subscribe(leo)
	reg := prometheus.NewRegistry()
	cfg := testConfig()
	cfg.Relay.BreakerCooldown, cfg.Relay.BreakerMaxCooldown = time.Minute, time.Minute
	e.start(e.conn, cfg, reg)
	e.publish(newEvent(leo, events.KindNew, 1, events.IntPtr(6)))
	waitFor(t, "the breaker to open", func() bool { return metricValue(t, reg, "pushproxy_dispatcher_relay_healthy") == 0 })

	good := newTestRelay(t)
	store, err := settings.Open(context.Background(), e.conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.EnableProxy(context.Background(), tenant, good.URI()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the push at the new relay", func() bool {
		p := good.pushes(deviceOf(leo))
		return len(p) > 0 && p[len(p)-1] == 6
	})
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("the new relay got the push after %s: the old breaker held it", took)
	}
	if v := metricValue(t, reg, "pushproxy_dispatcher_dead_letters_total"); v != 0 {
		t.Fatalf("%v dead letters", v)
	}
}
