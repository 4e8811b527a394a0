package graph

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func checkOps(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("requests\n%q\nwant\n%q", got, want)
	}
}

func checkCounter(t *testing.T, what string, got, want float64) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestManagerCreatesOnePerUser(t *testing.T) {
	h := newManagerHarness(t)
	m := h.manager(nil)
	if err := m.core.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Ten seconds in, the progress line tells what is left to create.
	h.clock.Advance(ProgressInterval)
	m.core.Tend()
	if log := h.log.String(); !strings.Contains(log, `"to_create":3`) || !strings.Contains(log, "creating Graph subscriptions") {
		t.Errorf("no progress line in %s", log)
	}
	m.drain(t)
	now := h.clock.Now()

	checkOps(t, h.graph.received(), sorted(ops("POST", userIDs...)))
	subs := h.graph.byResource()
	if len(subs) != 3 {
		t.Fatalf("%d subscriptions, want 3", len(subs))
	}
	for _, id := range userIDs {
		s, ok := subs[InboxResource(id)]
		switch {
		case !ok:
			t.Errorf("no subscription for %s", id)
		case s.req.ChangeType != "created,updated,deleted" || s.req.ClientState != secret || s.req.NotificationURL != h.notificationURL() ||
			s.req.LifecycleNotificationURL != h.lifecycleURL() || !s.expires.Equal(now.Add(testLifetime)):
			t.Errorf("subscription of %s: %+v, expires %s", id, s.req, s.expires)
		}
	}
	// Graph validated both endpoints of every subscription.
	h.graph.mu.Lock()
	validated := slices.Clone(h.graph.validated)
	h.graph.mu.Unlock()
	slices.Sort(validated)
	want := slices.Concat(slices.Repeat([]string{h.notificationURL()}, 3), slices.Repeat([]string{h.lifecycleURL()}, 3))
	slices.Sort(want)
	if !slices.Equal(validated, want) {
		t.Errorf("validated %q", validated)
	}
	checkCounter(t, "the source's validations{ok}", gathered(t, h.notifyReg, "pushproxy_graph_validations_total", "result", "ok"), 3)

	stored := h.stored()
	if len(stored) != 3 {
		t.Fatalf("%d stored, want 3", len(stored))
	}
	for addr, st := range stored {
		if st.SubscriptionID != h.graph.idOf(st.Resource) || st.Resource != InboxResource(st.UserID) || !st.Expires.Equal(now.Add(testLifetime)) ||
			st.ClientStateVersion != clientStateVersion(secret) || !st.Created.Equal(now) || !st.LastRenewal.IsZero() || st.Tenant != "fabrikam.com" {
			t.Errorf("stored for %s: %+v", addr, st)
		}
	}
	checkCounter(t, "subscriptions{managed}", testutil.ToFloat64(m.metrics.subscriptions.WithLabelValues("managed")), 3)
	checkCounter(t, "subscriptions{active}", testutil.ToFloat64(m.metrics.subscriptions.WithLabelValues("active")), 3)
	checkCounter(t, "operations{create,ok}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opCreate, "ok")), 3)
	checkCounter(t, "next expiry", testutil.ToFloat64(m.metrics.nextExpiry), float64(now.Add(testLifetime).Unix()))
}

// gathered is the value of the metric name whose labels include want
// (name=value pairs), as reg gathers it.
func gathered(t *testing.T, reg prometheus.Gatherer, name string, want ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(want); i += 2 {
				if labels[want[i]] != want[i+1] {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s%v", name, want)
	return 0
}

func TestManagerRestart(t *testing.T) {
	tests := []struct {
		name string
		// before changes the world between the two managers.
		before func(h *managerHarness)
		mutate func(*ManagerConfig)
		want   []string
		// op is the operation counted for each request of want.
		op       string
		managed  float64
		secretOf string // the clientState of the subscriptions after
	}{
		{name: "valid subscriptions are kept", want: nil, managed: 3, secretOf: secret},
		{name: "expired subscriptions are created anew", before: func(h *managerHarness) { h.clock.Advance(testLifetime + time.Second) },
			want: ops("POST", userIDs...), op: opRecreate, managed: 3, secretOf: secret},
		{name: "a user left the directory", before: func(h *managerHarness) { h.users.Set(managerUsers(t)[:2]...) },
			want: ops("DELETE", "carol@fabrikam.com"), op: opDelete, managed: 2, secretOf: secret},
		{name: "the clientState was rotated", mutate: func(c *ManagerConfig) { c.ClientStates = append(c.ClientStates, "rotated-secret") },
			want: sorted(ops("DELETE", userIDs...), ops("POST", userIDs...)), op: opRecreate, managed: 3, secretOf: "rotated-secret"},
		{name: "the lifecycle URL changed", mutate: func(c *ManagerConfig) { c.LifecycleURL += "&v=2" },
			want: sorted(ops("DELETE", userIDs...), ops("POST", userIDs...)), op: opRecreate, managed: 3, secretOf: secret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newManagerHarness(t)
			h.start(nil)
			h.graph.received()
			if tt.before != nil {
				tt.before(h)
			}
			m := h.start(tt.mutate)
			checkOps(t, h.graph.received(), sorted(tt.want))
			if tt.op != "" {
				n := float64(len(tt.want))
				if tt.op == opRecreate && strings.HasPrefix(tt.want[0], "DELETE") {
					n /= 2
				}
				checkCounter(t, "operations{"+tt.op+",ok}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(tt.op, "ok")), n)
			}
			checkCounter(t, "operations{create,ok}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opCreate, "ok")), 0)
			checkCounter(t, "subscriptions{active}", testutil.ToFloat64(m.metrics.subscriptions.WithLabelValues("active")), tt.managed)
			subs, stored := h.graph.byResource(), h.stored()
			if len(subs) != int(tt.managed) || len(stored) != int(tt.managed) {
				t.Fatalf("%d subscriptions and %d stored, want %v", len(subs), len(stored), tt.managed)
			}
			for _, st := range stored {
				if s := subs[st.Resource]; h.graph.idOf(st.Resource) != st.SubscriptionID || s.req.ClientState != tt.secretOf {
					t.Errorf("stored %+v, Graph has %+v", st, s)
				}
			}
		})
	}
}

func TestManagerSkipsUnreadableRecords(t *testing.T) {
	h := newManagerHarness(t)
	h.start(nil)
	h.graph.received()
	store := h.store.(*MemorySubscriptionStore)
	key := SubscriptionKey("fabrikam.com", "bob@fabrikam.com")
	store.PutRaw(key, []byte(`{"tenant":"fabrikam.com"`))
	h.start(nil)
	// Bob's record is lost: he gets a new subscription (the old one is
	// left to expire).
	checkOps(t, h.graph.received(), ops("POST", bobID))
	if !strings.Contains(h.log.String(), "unreadable") {
		t.Error("the unreadable record was not logged")
	}
	if _, err := store.Get(context.Background(), key); err != nil {
		t.Errorf("bob's record was not written anew: %v", err)
	}
}

func TestManagerRenewsBeforeExpiry(t *testing.T) {
	h := newManagerHarness(t)
	m := h.start(nil)
	h.graph.received()
	created := h.clock.Now()

	// A third of the lifetime is left and a second more: nothing is due.
	h.clock.Advance(testLifetime - testLifetime/3 - time.Second)
	m.drain(t)
	checkOps(t, h.graph.received(), nil)

	// A sixth is left: every subscription is renewed, whatever its jitter.
	h.clock.Advance(testLifetime/6 + time.Second)
	m.drain(t)
	now := h.clock.Now()
	checkOps(t, h.graph.received(), sorted(ops("PATCH", userIDs...)))
	for _, s := range h.graph.byResource() {
		if !s.expires.Equal(now.Add(testLifetime)) {
			t.Errorf("Graph's expiry %s, want %s", s.expires, now.Add(testLifetime))
		}
	}
	for addr, st := range h.stored() {
		if !st.Expires.Equal(now.Add(testLifetime)) || !st.LastRenewal.Equal(now) || !st.Created.Equal(created) {
			t.Errorf("stored for %s: %+v", addr, st)
		}
	}
	checkCounter(t, "operations{renew,ok}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opRenew, "ok")), 3)
	checkCounter(t, "next expiry", testutil.ToFloat64(m.metrics.nextExpiry), float64(now.Add(testLifetime).Unix()))
}

func TestRenewAtSpreadsRenewals(t *testing.T) {
	tests := []struct {
		name                string
		renewBefore, jitter time.Duration
		granted             time.Duration // the lifetime Graph gave
		earliest, latest    time.Duration // before the expiry
	}{
		{"default: between a third and a sixth left", 0, 0, MaxMailSubscriptionLifetime, MaxMailSubscriptionLifetime / 3, MaxMailSubscriptionLifetime / 6},
		{"no jitter", 0, -1, MaxMailSubscriptionLifetime, MaxMailSubscriptionLifetime / 3, MaxMailSubscriptionLifetime / 3},
		{"Graph granted less: half of it", 0, 0, time.Hour, 30 * time.Minute, 30 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newManagerHarness(t)
			m := h.manager(func(c *ManagerConfig) {
				c.Lifetime, c.RenewBefore, c.RenewJitter = MaxMailSubscriptionLifetime, tt.renewBefore, tt.jitter
			})
			created := h.clock.Now()
			st := &SubscriptionState{Created: created, Expires: created.Add(tt.granted)}
			seen := map[time.Time]bool{}
			for i := range 1000 {
				at := m.renewAt(SubscriptionKey("fabrikam.com", fmt.Sprintf("user%d@fabrikam.com", i)), st)
				before := st.Expires.Sub(at)
				if before > tt.earliest || before < tt.latest {
					t.Fatalf("renewed %s before the expiry, want between %s and %s", before, tt.latest, tt.earliest)
				}
				seen[at] = true
			}
			if spread := tt.earliest != tt.latest; spread && len(seen) < 900 || !spread && len(seen) != 1 {
				t.Errorf("%d distinct renewal times of 1000", len(seen))
			}
		})
	}
}

func TestManagerRecreates(t *testing.T) {
	tests := []struct {
		name string
		// remove makes Graph lose alice's subscription id and tells.
		remove func(h *managerHarness, id string)
		want   []string
		renews float64
	}{
		{"subscriptionRemoved", func(h *managerHarness, id string) {
			if code, body := h.postLifecycle("key="+managerKey, lifecycleBody(LifecycleSubscriptionRemoved, id, secret)); code != http.StatusAccepted {
				t.Fatalf("lifecycle answered %d %s", code, body)
			}
		}, ops("POST", aliceID), 0},
		{"404 on renewal", func(h *managerHarness, _ string) { h.clock.Advance(testLifetime - testLifetime/6) },
			sorted([]string{"PATCH " + aliceID + " 404"}, ops("POST", aliceID), ops("PATCH", bobID, "carol@fabrikam.com")), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newManagerHarness(t)
			m := h.start(nil)
			h.graph.received()
			old := h.graph.idOf(InboxResource(aliceID))
			h.graph.remove(old)
			tt.remove(h, old)
			m.drain(t)
			checkOps(t, h.graph.received(), tt.want)
			st := h.stored()["alice@fabrikam.com"]
			if st.SubscriptionID == old || st.SubscriptionID != h.graph.idOf(InboxResource(aliceID)) {
				t.Errorf("alice's stored subscription %s (the old one %s)", st.SubscriptionID, old)
			}
			checkCounter(t, "operations{recreate,ok}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opRecreate, "ok")), 1)
			checkCounter(t, "operations{renew,ok}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opRenew, "ok")), tt.renews)
			checkCounter(t, "operations{renew,error}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opRenew, "error")), 0)
			// The new subscription is known to lifecycle notifications, the
			// old one no more.
			m.core.Lock()
			knowsOld := m.core.Find(old) != nil
			m.core.Unlock()
			if knowsOld {
				t.Error("the removed subscription is still known")
			}
		})
	}
}

func TestManagerLifecycle(t *testing.T) {
	tests := []struct {
		name   string
		method string
		query  string
		// body is made from alice's subscription id.
		body     func(id string) string
		status   int
		answer   string // contained in the answer
		want     []string
		missed   []string
		counted  string // the lifecycle event counted, when one is
		logged   string // contained in the log
		notFound bool
	}{
		{name: "reauthorizationRequired renews", body: func(id string) string { return lifecycleBody(LifecycleReauthorizationRequired, id, secret) },
			status: http.StatusAccepted, want: ops("PATCH", aliceID), counted: LifecycleReauthorizationRequired},
		{name: "a previous clientState is accepted", body: func(id string) string { return lifecycleBody(LifecycleReauthorizationRequired, id, "previous-secret") },
			status: http.StatusAccepted, want: ops("PATCH", aliceID), counted: LifecycleReauthorizationRequired},
		{name: "missed asks for the count", body: func(id string) string { return lifecycleBody(LifecycleMissed, id, secret) },
			status: http.StatusAccepted, missed: []string{"fabrikam.com alice@fabrikam.com"}, counted: LifecycleMissed},
		{name: "an unknown subscription is ignored", body: func(string) string {
			return lifecycleBody(LifecycleSubscriptionRemoved, "0c4a9b3e-58a4-4b8f-a4c2-5c1d7e2f9a10", secret)
		},
			status: http.StatusAccepted, counted: LifecycleSubscriptionRemoved, logged: "does not know"},
		{name: "an unknown event is ignored", body: func(id string) string { return lifecycleBody("somethingNew", id, secret) },
			status: http.StatusAccepted, counted: "other", logged: "unknown event"},
		{name: "a wrong clientState", body: func(id string) string { return lifecycleBody(LifecycleSubscriptionRemoved, id, "forged") },
			status: http.StatusUnauthorized, answer: "clientState", logged: "wrong clientState"},
		{name: "a wrong key", query: "key=wrong", body: func(id string) string { return lifecycleBody(LifecycleSubscriptionRemoved, id, secret) },
			status: http.StatusUnauthorized},
		{name: "not a collection", body: func(string) string { return `[1,2]` }, status: http.StatusBadRequest},
		{name: "validation", query: "key=" + managerKey + "&validationToken=Validation%3A+Testing+client+application+reachability",
			body: func(string) string { return "" }, status: http.StatusOK, answer: "Validation: Testing client application reachability"},
		{name: "validation with a wrong key", query: "key=wrong&validationToken=abc", body: func(string) string { return "" }, status: http.StatusUnauthorized},
		{name: "validation with a bad token", query: "key=" + managerKey + "&validationToken=%00", body: func(string) string { return "" }, status: http.StatusBadRequest},
		{name: "GET", method: http.MethodGet, body: func(string) string { return "" }, status: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newManagerHarness(t)
			m := h.start(nil)
			h.graph.received()
			query := tt.query
			if query == "" {
				query = "key=" + managerKey
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequest(method, h.lifecycle.URL+"/v1/graph/lifecycle?"+query, strings.NewReader(tt.body(h.graph.idOf(InboxResource(aliceID)))))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var answer bytes.Buffer
			_, _ = answer.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.Contains(answer.String(), tt.answer) {
				t.Fatalf("answered %d %q, want %d with %q", resp.StatusCode, answer.String(), tt.status, tt.answer)
			}
			if tt.status == http.StatusOK && (resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || answer.String() != tt.answer) {
				t.Errorf("validation answered %q %q", resp.Header.Get("Content-Type"), answer.String())
			}
			m.drain(t)
			checkOps(t, h.graph.received(), tt.want)
			if got := h.missed.Got(); !slices.Equal(got, tt.missed) {
				t.Errorf("missed called with %q, want %q", got, tt.missed)
			}
			for _, e := range []string{LifecycleReauthorizationRequired, LifecycleSubscriptionRemoved, LifecycleMissed, "other"} {
				want := 0.0
				if e == tt.counted {
					want = 1
				}
				checkCounter(t, "lifecycle{"+e+"}", testutil.ToFloat64(m.metrics.lifecycle.WithLabelValues(e)), want)
			}
			if !strings.Contains(h.log.String(), tt.logged) {
				t.Errorf("%q not logged", tt.logged)
			}
		})
	}
}

func TestManagerLifecycleBeforeLoading(t *testing.T) {
	h := newManagerHarness(t)
	m := h.manager(nil)
	err := m.Lifecycle(context.Background(), []byte(lifecycleBody(LifecycleMissed, "x", secret)))
	if err == nil || !strings.Contains(err.Error(), "not loaded") {
		t.Fatalf("error %v", err)
	}
	if code, _ := h.postLifecycle("key="+managerKey, lifecycleBody(LifecycleMissed, "x", secret)); code != http.StatusServiceUnavailable {
		t.Errorf("answered %d, want 503 so that Graph retries", code)
	}
	m.OnLifecycle(context.Background(), Lifecycle{Event: LifecycleMissed, SubscriptionID: "x"})
	if len(h.missed.Got()) != 0 {
		t.Error("missed called")
	}
}

// TestManagerOnLifecycle passes lifecycle notifications that came to the
// notification URL through the source.
func TestManagerOnLifecycle(t *testing.T) {
	h := newManagerHarness(t)
	m := h.start(nil)
	h.graph.received()
	src := newTestSource(t, func(c *Config) { c.OnLifecycle = m.OnLifecycle })
	id := h.graph.idOf(InboxResource(bobID))
	for _, event := range []string{LifecycleMissed, LifecycleReauthorizationRequired} {
		if _, err := parseBody(t, src, []byte(lifecycleBody(event, id, secret))); err != nil {
			t.Fatal(err)
		}
	}
	m.drain(t)
	checkOps(t, h.graph.received(), ops("PATCH", bobID))
	if got := h.missed.Got(); !slices.Equal(got, []string{"fabrikam.com bob@fabrikam.com"}) {
		t.Errorf("missed called with %q", got)
	}
	// The source counted them; the manager does not count them again.
	checkCounter(t, "the manager's lifecycle{missed}", testutil.ToFloat64(m.metrics.lifecycle.WithLabelValues(LifecycleMissed)), 0)
}

func TestManagerLifecycleTenantScope(t *testing.T) {
	h := newManagerHarness(t)
	m := h.start(func(c *ManagerConfig) { c.ClientStates = []string{"contoso.com:contoso-secret", secret} })
	h.graph.received()
	// contoso's secret is known but may not speak for fabrikam's users.
	if err := m.Lifecycle(context.Background(), []byte(lifecycleBody(LifecycleMissed, h.graph.idOf(InboxResource(aliceID)), "contoso-secret"))); err != nil {
		t.Fatal(err)
	}
	if len(h.missed.Got()) != 0 || !strings.Contains(h.log.String(), "may not report") {
		t.Errorf("missed called with %q", h.missed.Got())
	}
}

func TestManagerDeletesUsersWhoLeft(t *testing.T) {
	h := newManagerHarness(t)
	m := h.start(nil)
	h.graph.received()
	carol := h.graph.idOf(InboxResource("carol@fabrikam.com"))
	h.users.Set(managerUsers(t)[:2]...)
	m.core.Relist(context.Background())
	m.drain(t)
	checkOps(t, h.graph.received(), ops("DELETE", "carol@fabrikam.com"))
	if _, ok := h.stored()["carol@fabrikam.com"]; ok {
		t.Error("carol's subscription is still stored")
	}
	checkCounter(t, "operations{delete,ok}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opDelete, "ok")), 1)
	checkCounter(t, "subscriptions{managed}", testutil.ToFloat64(m.metrics.subscriptions.WithLabelValues("managed")), 2)
	// A lifecycle notification about the deleted subscription is ignored.
	if err := m.Lifecycle(context.Background(), []byte(lifecycleBody(LifecycleMissed, carol, secret))); err != nil || len(h.missed.Got()) != 0 {
		t.Errorf("lifecycle: %v, missed %q", err, h.missed.Got())
	}
	// A directory that cannot be read changes nothing.
	h.users.Fail(errors.New("directory unavailable"))
	m.core.Relist(context.Background())
	m.drain(t)
	checkOps(t, h.graph.received(), nil)
}

func TestManagerThrottlingAndErrors(t *testing.T) {
	tests := []struct {
		name     string
		throttle int
		fail     int
		want     []string
		slept    []time.Duration
		errors   float64
		// then, after the backoff
		later []string
	}{
		{name: "429 with Retry-After is waited out", throttle: 1,
			want: sorted([]string{"POST " + bobID + " 429"}, ops("POST", userIDs...)), slept: []time.Duration{7 * time.Second}},
		{name: "a 500 is tried again after the backoff", fail: 1,
			want: sorted([]string{"POST " + bobID + " 500"}, ops("POST", aliceID, "carol@fabrikam.com")), errors: 1, later: ops("POST", bobID)},
		{name: "throttled past the attempts", throttle: 4,
			want:  sorted(slices.Repeat([]string{"POST " + bobID + " 429"}, 4), ops("POST", aliceID, "carol@fabrikam.com")),
			slept: slices.Repeat([]time.Duration{7 * time.Second}, 3), errors: 1, later: ops("POST", bobID)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newManagerHarness(t)
			h.graph.throttle, h.graph.fail = tt.throttle, tt.fail
			// Bob's key comes first: his create is the one answered first.
			h.users.Set(slices.DeleteFunc(managerUsers(t), func(u ManagedUser) bool { return u.ID == aliceID || u.ID == "carol@fabrikam.com" })...)
			m := h.start(nil)
			h.users.Set(managerUsers(t)...)
			m.core.Relist(context.Background())
			m.drain(t)
			checkOps(t, h.graph.received(), tt.want)
			if got := h.clock.Slept(); !slices.Equal(got, tt.slept) {
				t.Errorf("slept %v, want %v", got, tt.slept)
			}
			checkCounter(t, "operations{create,error}", testutil.ToFloat64(m.metrics.operations.WithLabelValues(opCreate, "error")), tt.errors)
			h.clock.Advance(DefaultErrorBackoff - time.Second)
			m.drain(t)
			checkOps(t, h.graph.received(), nil)
			h.clock.Advance(time.Second)
			m.drain(t)
			checkOps(t, h.graph.received(), tt.later)
			checkCounter(t, "subscriptions{active}", testutil.ToFloat64(m.metrics.subscriptions.WithLabelValues("active")), 3)
		})
	}
}

// TestManagerRun runs the loop on the real clock: it creates, renews at
// a lifecycle notification's request, and on stopping keeps or deletes.
func TestManagerRun(t *testing.T) {
	for _, deleteOnStop := range []bool{false, true} {
		t.Run(map[bool]string{false: "keep on stop", true: "delete on stop"}[deleteOnStop], func(t *testing.T) {
			h := newManagerHarness(t)
			m := h.manager(func(c *ManagerConfig) {
				c.Now, c.Sleep, c.After, c.Concurrency, c.DeleteOnStop = nil, nil, nil, 4, deleteOnStop
			})
			// Graph checks expirations on the real clock too.
			h.clock.UseRealTime()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			waitFor(t, "three subscriptions", func() bool { return len(h.graph.byResource()) == 3 })
			waitFor(t, "three stored", func() bool { return len(h.stored()) == 3 })
			h.graph.received()
			if code, body := h.postLifecycle("key="+managerKey, lifecycleBody(LifecycleReauthorizationRequired, h.graph.idOf(InboxResource(bobID)), secret)); code != http.StatusAccepted {
				t.Fatalf("lifecycle answered %d %s", code, body)
			}
			var got []string
			waitFor(t, "the renewal", func() bool { got = append(got, h.graph.received()...); return len(got) > 0 })
			checkOps(t, got, ops("PATCH", bobID))
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			want := 3
			if deleteOnStop {
				want = 0
				checkOps(t, h.graph.received(), sorted(ops("DELETE", userIDs...)))
			}
			if n, stored := len(h.graph.byResource()), len(h.stored()); n != want || stored != want {
				t.Errorf("%d subscriptions and %d stored after stopping, want %d", n, stored, want)
			}
		})
	}
}

// waitFor polls cond every few milliseconds for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 10 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
