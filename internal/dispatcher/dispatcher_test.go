package dispatcher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

func TestBurstBecomesOneOrTwoPushes(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(2))
	e.enableProxy()
	alice := userName(1)
	e.subscribe(alice)
	cfg := testConfig()
	cfg.Coalesce.Window = 200 * time.Millisecond
	r := e.start(e.conn, cfg)

	var burst []events.Event
	for i := 1; i <= 100; i++ {
		burst = append(burst, newEvent(alice, events.KindNew, 1, events.IntPtr(i)))
	}
	e.publish(burst...)
	waitFor(t, "the final count pushed", func() bool { return e.lastPushed(alice) == 100 })
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
	if p := e.relay.pushes(deviceOf(alice)); len(p) > 2 {
		t.Fatalf("100 events gave %d pushes %v, want one or two", len(p), p)
	}
	if got := metricValue(t, r.reg, "pushproxy_dispatcher_events_consumed_total", "result", "applied"); got != 100 {
		t.Fatalf("events applied = %v, want 100", got)
	}
	st, _, err := e.state.Get(context.Background(), e.keyer.UserKey(tenant, alice))
	if err != nil || st.Count != 100 || !st.Exact || st.LastPushedCount == nil || *st.LastPushedCount != 100 {
		t.Fatalf("unread state = %+v, %v; want count 100, exact, pushed 100", st, err)
	}

	// PUSH_SENT records the push with the covered sequences.
	var sent []dispatcher.SentRecord
	for _, m := range streamMessages(t, e.conn.JS, broker.StreamSent) {
		var rec dispatcher.SentRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatal(err)
		}
		if m.Subject != dispatcher.SentSubject(e.keyer.UserKey(tenant, alice)) {
			t.Fatalf("sent record on %s", m.Subject)
		}
		sent = append(sent, rec)
	}
	if len(sent) == 0 || sent[len(sent)-1].Count != 100 || sent[len(sent)-1].LastSeq != 100 || sent[0].FirstSeq != 1 || sent[0].Devices != 1 {
		t.Fatalf("sent records %+v", sent)
	}
}

func TestSameEventTwiceCountsOnce(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	bob := userName(2)
	e.subscribe(bob)
	e.start(e.conn, testConfig())

	ev := newEvent(bob, events.KindNew, 1, nil)
	e.publish(ev)
	e.publish(ev) // a source retry: same change id, same Nats-Msg-Id
	e.publish(newEvent(bob, events.KindNew, 1, nil))
	waitFor(t, "a push of 2", func() bool { return e.lastPushed(bob) == 2 })
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
	st, _, _ := e.state.Get(context.Background(), e.keyer.UserKey(tenant, bob))
	if st.Count != 2 || st.Exact {
		t.Fatalf("state %+v, want an estimated count of 2", st)
	}
}

func TestProxyDisabledCountsButPushesNothing(t *testing.T) {
	e := newEnv(t)
	carol := userName(3)
	e.subscribe(carol)
	reg := prometheus.NewRegistry()
	e.start(e.conn, testConfig(), reg)

	e.publish(newEvent(carol, events.KindNew, 1, events.IntPtr(4)), newEvent(carol, events.KindRead, 1, nil))
	key := e.keyer.UserKey(tenant, carol)
	waitFor(t, "the count tracked", func() bool {
		st, _, _ := e.state.Get(context.Background(), key)
		return st.Count == 3 && st.LastSeq == 2
	})
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
	if n := e.relay.requestCount(); n != 0 {
		t.Fatalf("the relay got %d requests while the proxy is disabled", n)
	}
	if v := metricValue(t, reg, "pushproxy_dispatcher_proxy_disabled"); v != 1 {
		t.Fatalf("proxy_disabled = %v, want 1", v)
	}
	if v := metricValue(t, reg, "pushproxy_dispatcher_pushes_skipped_total", "reason", "proxy_disabled"); v < 1 {
		t.Fatalf("no push skipped for proxy_disabled")
	}

	e.enableProxy()
	waitFor(t, "the gauge to follow the settings", func() bool { return metricValue(t, reg, "pushproxy_dispatcher_proxy_disabled") == 0 })
	e.publish(newEvent(carol, events.KindNew, 1, nil))
	waitFor(t, "a push once enabled", func() bool { return e.lastPushed(carol) == 4 })
}

func TestNoSubscriptionsStillAcknowledges(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	reg := prometheus.NewRegistry()
	e.start(e.conn, testConfig(), reg)
	e.publish(newEvent(userName(4), events.KindNew, 1, nil))
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
	if v := metricValue(t, reg, "pushproxy_dispatcher_pushes_skipped_total", "reason", "no_subscriptions"); v != 1 {
		t.Fatalf("skipped no_subscriptions = %v, want 1", v)
	}
}

// TestPropertyFinalCountIsPushed publishes random event sequences for many
// users and checks that each user's last pushed count is the true final
// count.
func TestPropertyFinalCountIsPushed(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(4))
	e.enableProxy()
	e.start(e.conn, testConfig())
	for seed := uint64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		users := map[string][]events.Event{}
		var all []events.Event
		var names []string
		for i := range 30 {
			u := userName(int(seed)*100 + i)
			e.subscribe(u)
			names = append(names, u)
		}
		for range 400 {
			u := names[rng.IntN(len(names))]
			var ev events.Event
			switch rng.IntN(6) {
			case 0:
				ev = newEvent(u, events.KindNew, 1+rng.IntN(3), nil)
			case 1:
				ev = newEvent(u, events.KindRead, 1+rng.IntN(3), nil)
			case 2:
				ev = newEvent(u, events.KindDeleted, 1, nil)
			case 3:
				ev = newEvent(u, events.KindMoved, 1, nil)
			case 4:
				ev = newEvent(u, events.KindNew, 1, events.IntPtr(rng.IntN(20)))
			default:
				ev = newEvent(u, events.KindSnapshot, 1, events.IntPtr(rng.IntN(20)))
			}
			users[u] = append(users[u], ev)
			all = append(all, ev)
		}
		// Publish in random chunks so the dispatcher sees the sequences
		// arrive over time, not all at once.
		for len(all) > 0 {
			n := min(len(all), 1+rng.IntN(60))
			e.publish(all[:n]...)
			all = all[n:]
			time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		}
		for u, evs := range users {
			if len(evs) == 0 {
				continue
			}
			want := finalCount(evs)
			waitFor(t, "final count of "+u, func() bool { return e.lastPushed(u) == want })
		}
	}
}

func TestConsumersAreBoundedAndPinned(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(3))
	e.enableProxy()
	d, err := dispatcher.New(context.Background(), testConfig(), e.conn, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Partitions() != 3 {
		t.Fatalf("partitions = %d, want 3 from the stream", d.Partitions())
	}
	for p := range 3 {
		c, err := e.conn.JS.Consumer(context.Background(), broker.StreamMail, dispatcher.DefaultConsumerPrefix+"-p"+string(rune('0'+p)))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := c.Info(context.Background())
		cfg := info.Config
		if cfg.MaxDeliver != dispatcher.DefaultMaxDeliver || cfg.AckWait != 2*time.Second || cfg.PinnedTTL != 2*time.Second ||
			len(cfg.PriorityGroups) != 1 || cfg.FilterSubject != broker.PartitionFilter(p) {
			t.Fatalf("consumer %d config %+v", p, cfg)
		}
	}
}

// TestDevicesBeyondTheCache: with room for two users' devices, ten users
// still get every push, and a device registered after its user's devices
// were read gets the next push.
func TestDevicesBeyondTheCache(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(2))
	e.enableProxy()
	const users = 10
	var names []string
	for i := range users {
		names = append(names, userName(i))
	}
	e.subscribe(names...)
	cfg := testConfig()
	cfg.DeviceCacheUsers = 2
	e.start(e.conn, cfg)

	for round := 1; round <= 3; round++ {
		var evs []events.Event
		for _, u := range names {
			evs = append(evs, newEvent(u, events.KindNew, 1, events.IntPtr(round)))
		}
		e.publish(evs...)
		for _, u := range names {
			waitFor(t, fmt.Sprintf("round %d pushed to %s", round, u), func() bool { return e.lastPushed(u) == round })
		}
	}

	alice := names[0]
	second := "second-" + deviceOf(alice)
	if _, _, err := e.subs.Put(context.Background(), subscriptions.Subscription{
		Tenant: tenant, User: alice, AppID: "com.example.mail", DeviceID: second, Platform: subscriptions.PlatformAPNS,
		Options: subscriptions.OptionEmail, Language: "en-GB",
	}); err != nil {
		t.Fatal(err)
	}
	e.publish(newEvent(alice, events.KindNew, 1, events.IntPtr(4)))
	waitFor(t, "the push to the new device", func() bool {
		p := e.relay.pushes(second)
		return len(p) > 0 && p[len(p)-1] == 4
	})
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
}

// TestNewMailWindowCountsFromIngest: new mail read within a window of
// ingest receiving it is pushed a window after ingest received it, and a
// quarter of the window after the read at the earliest; new mail read
// more than a window late (a backlog), or stamped by an ingest whose clock
// is ahead of the dispatcher's, waits the whole window from the read.
func TestNewMailWindowCountsFromIngest(t *testing.T) {
	const window = 4 * time.Second
	e := newEnv(t, brokertest.WithPartitions(2))
	e.enableProxy()
	tests := []struct {
		user string
		// before is how long before the publish ingest received the event.
		before time.Duration
		// earliest and latest bound the push, from the publish; the
		// lower bounds hold whatever the machine's load, the upper one
		// leaves two seconds to spare.
		earliest, latest time.Duration
	}{
		{userName(1), 3 * time.Second, window / 4, window - time.Second},
		{userName(2), 0, window, 3 * window},
		{userName(3), time.Hour, window, 3 * window},
		{userName(4), -time.Hour, window, 3 * window},
	}
	for _, tt := range tests {
		e.subscribe(tt.user)
	}
	cfg := testConfig()
	cfg.Coalesce.Window, cfg.Coalesce.MaxDelay = window, 2*window
	r := e.start(e.conn, cfg)
	waitFor(t, "both partitions taken", func() bool {
		return metricValue(t, r.reg, "pushproxy_dispatcher_partition_takeovers_total") >= 2
	})
	published := time.Now()
	var evs []events.Event
	for _, tt := range tests {
		ev := newEvent(tt.user, events.KindNew, 1, events.IntPtr(1))
		ev.ReceivedAt = published.Add(-tt.before).UTC()
		evs = append(evs, ev)
	}
	e.publish(evs...)
	pushedAfter := map[string]time.Duration{}
	waitFor(t, "every user's push", func() bool {
		for _, tt := range tests {
			if _, seen := pushedAfter[tt.user]; !seen && e.lastPushed(tt.user) == 1 {
				pushedAfter[tt.user] = time.Since(published)
			}
		}
		return len(pushedAfter) == len(tests)
	})
	for _, tt := range tests {
		if got := pushedAfter[tt.user]; got < tt.earliest || got >= tt.latest {
			t.Errorf("%s, received %s before the publish: pushed %s after it, want from %s to %s", tt.user, tt.before, got.Round(time.Millisecond), tt.earliest, tt.latest)
		}
	}
}

// TestEventAgeIsMeasured: pushproxy_dispatcher_event_age_seconds observes
// how long ago ingest received each event the dispatcher reads; an event
// without a receipt time (only when it occurred) is not counted, and one
// received by a clock ahead of the dispatcher's counts as received now and
// in events_received_ahead_total.
func TestEventAgeIsMeasured(t *testing.T) {
	e := newEnv(t)
	e.enableProxy()
	reg := prometheus.NewRegistry()
	e.start(e.conn, testConfig(), reg)
	old := newEvent(userName(7), events.KindNew, 1, nil)
	old.ReceivedAt = time.Now().Add(-2 * time.Second).UTC()
	unstamped := newEvent(userName(8), events.KindNew, 1, nil)
	unstamped.ReceivedAt = time.Time{}
	ahead := newEvent(userName(9), events.KindNew, 1, nil)
	ahead.ReceivedAt = time.Now().Add(time.Hour).UTC()
	e.publish(old)
	e.publish(unstamped)
	e.publish(ahead)
	waitFor(t, "every event acknowledged", func() bool { return settled(t, e) })
	if got := metricValue(t, reg, "pushproxy_dispatcher_events_received_ahead_total"); got != 1 {
		t.Fatalf("events received ahead = %v, want 1", got)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "pushproxy_dispatcher_event_age_seconds" {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 2 || h.GetSampleSum() < 2 || h.GetSampleSum() > 60 {
			t.Fatalf("event ages: %d observed, %.3f s in all; want the two stamped events', at least 2 s (the one ahead counts as 0)", h.GetSampleCount(), h.GetSampleSum())
		}
		return
	}
	t.Fatal("no pushproxy_dispatcher_event_age_seconds")
}
