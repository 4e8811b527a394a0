package delivery_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

type staticToken struct{}

func (staticToken) Token(context.Context) (string, error) { return "token", nil }

// relayAnswer is what the test relay answers to one request: a fault for
// the whole request, or a class per device.
type relayAnswer struct {
	status int
	fault  *relayproto.Fault
	device func(tenant string, rc relayproto.Recipient) relayproto.DeviceResult
}

// testRelay speaks the relay protocol over HTTP.
type testRelay struct {
	srv *httptest.Server

	mu       sync.Mutex
	answer   func(n int) relayAnswer
	requests int
	got      map[string][]int // delivered counts by device
}

func newTestRelay(t *testing.T) *testRelay {
	r := &testRelay{got: map[string][]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *testRelay) uri(context.Context) (string, error) {
	return r.srv.URL + "/PushNotifications", nil
}

func (r *testRelay) setAnswer(f func(n int) relayAnswer) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

func (r *testRelay) delivered(device string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.got[device]...)
}

func (r *testRelay) serve(w http.ResponseWriter, req *http.Request) {
	var body relayproto.Request
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	a := relayAnswer{status: http.StatusOK}
	if r.answer != nil {
		a = r.answer(r.requests)
	}
	w.Header().Set("Content-Type", "application/json")
	if a.status != http.StatusOK {
		w.WriteHeader(a.status)
		_ = json.NewEncoder(w).Encode(a.fault)
		return
	}
	var resp relayproto.Response
	for _, n := range body.Notifications {
		res := relayproto.NotificationResult{ID: n.ID}
		for _, rc := range n.Recipients {
			d := relayproto.DeviceResult{AppID: rc.AppID, DeviceID: rc.DeviceID}
			d.SetClass(relayproto.ClassDelivered)
			if a.device != nil {
				d = a.device(n.Payload.TenantID, rc)
			}
			if d.Outcome() == relayproto.ClassDelivered {
				r.got[rc.DeviceID] = append(r.got[rc.DeviceID], n.Payload.UnseenEmailCount)
			}
			res.Devices = append(res.Devices, d)
		}
		resp.Results = append(resp.Results, res)
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func result(rc relayproto.Recipient, c relayproto.Class, reason string) relayproto.DeviceResult {
	d := relayproto.DeviceResult{AppID: rc.AppID, DeviceID: rc.DeviceID, Reason: reason}
	d.SetClass(c)
	return d
}

// fixture is a provisioned JetStream with stores, a test relay and a
// deliverer over both.
type fixture struct {
	ctx   context.Context
	conn  *broker.Conn
	keyer *events.Keyer
	subs  *subscriptions.Store
	tombs *pushlog.Tombstones
	relay *testRelay
	d     *delivery.Deliverer
}

func newFixture(t *testing.T, pol delivery.Policy) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	conn := brokertest.Start(t)
	f := &fixture{ctx: ctx, conn: conn, keyer: brokertest.Keyer(t, conn), relay: newTestRelay(t)}
	var err error
	if f.subs, err = subscriptions.Open(ctx, conn.JS, f.keyer); err != nil {
		t.Fatal(err)
	}
	if f.tombs, err = pushlog.OpenTombstones(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}
	client := relayclient.New(relayclient.Config{Tokens: staticToken{}, BreakerFailures: -1})
	f.d = delivery.New(delivery.Config{
		JS: conn.JS, Relay: client, URI: f.relay.uri, Subscriptions: f.subs, Tombstones: f.tombs,
		Breakers: delivery.NewBreakers(delivery.BreakerConfig{Faults: 1, Cooldown: 200 * time.Millisecond}),
		Policy:   pol, Origin: delivery.OriginRedrive, Log: zerolog.Nop(),
	})
	return f
}

// subscribe stores a subscription and returns it as stored.
func (f *fixture) subscribe(t *testing.T, tenant, user, app, device string) subscriptions.Subscription {
	t.Helper()
	s, _, err := f.subs.Put(f.ctx, subscriptions.Subscription{Tenant: tenant, User: user, AppID: app, DeviceID: device, Platform: subscriptions.PlatformAPNS})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// push is a push of count to subs, all of one user.
func (f *fixture) push(count int, subs ...subscriptions.Subscription) delivery.Push {
	p := delivery.Push{Tenant: subs[0].Tenant, User: subs[0].User, UserKey: f.keyer.UserKey(subs[0].Tenant, subs[0].User), Count: count}
	n := relayproto.Notification{ID: uuid.NewString(), Payload: relayproto.Payload{TenantID: subs[0].Tenant, UnseenEmailCount: count}}
	for _, s := range subs {
		n.Recipients = append(n.Recipients, relayproto.Recipient{AppID: s.AppID, DeviceID: s.DeviceID, LastSubscriptionUpdate: s.LastSubscriptionUpdate})
	}
	p.Notifications = []relayproto.Notification{n}
	return p
}

func (f *fixture) count(t *testing.T, tenant, user string) int {
	t.Helper()
	subs, err := f.subs.List(f.ctx, tenant, user)
	if err != nil {
		t.Fatal(err)
	}
	return len(subs)
}

func TestAppFaultPausesOnlyThatTenantAndApp(t *testing.T) {
	f := newFixture(t, delivery.Policy{MaxElapsedTime: time.Second})
	broken := map[string]bool{"contoso.com/mail": true}
	f.relay.setAnswer(func(int) relayAnswer {
		return relayAnswer{status: http.StatusOK, device: func(tenant string, rc relayproto.Recipient) relayproto.DeviceResult {
			if broken[tenant+"/"+rc.AppID] {
				return result(rc, relayproto.ClassAppFault, "apns: 403 InvalidProviderToken")
			}
			return result(rc, relayproto.ClassDelivered, "")
		}}
	})
	a1 := f.subscribe(t, "contoso.com", "a@contoso.com", "mail", "dev-a1")
	a2 := f.subscribe(t, "contoso.com", "b@contoso.com", "mail", "dev-a2")
	other := f.subscribe(t, "contoso.com", "a@contoso.com", "calendar", "dev-cal")
	fab := f.subscribe(t, "fabrikam.com", "x@fabrikam.com", "mail", "dev-fab")

	res := f.d.Send(f.ctx, []delivery.Push{f.push(3, a1, other), f.push(4, fab)})
	if got := len(res[0].Answer.AppFaults); got != 1 || res[0].Answer.Delivered["calendar"] != 1 || res[1].Answer.Delivered["mail"] != 1 {
		t.Fatalf("answers %+v / %+v", res[0].Answer, res[1].Answer)
	}
	if len(res[0].Answer.Gone) != 0 || res[0].Sent == nil {
		t.Fatalf("push with an app fault: %+v", res[0])
	}
	// Only contoso's mail app is paused.
	paused := f.d.Breakers().Paused()
	if len(paused) != 1 || paused[0].Tenant != "contoso.com" || paused[0].AppID != "mail" {
		t.Fatalf("paused %+v, want contoso.com/mail only", paused)
	}
	res = f.d.Send(f.ctx, []delivery.Push{f.push(5, a2), f.push(6, fab), f.push(7, other)})
	if len(res[0].Paused) != 1 || res[0].Attempts != 0 && len(res[0].Answer.AppFaults) != 0 {
		t.Fatalf("a paused tenant+app was sent: %+v", res[0])
	}
	if got := f.relay.delivered("dev-fab"); len(got) != 2 || got[1] != 6 {
		t.Fatalf("another tenant's device got %v, want [4 6]", got)
	}
	if got := f.relay.delivered("dev-cal"); len(got) != 2 || got[1] != 7 {
		t.Fatalf("another app of the same tenant got %v, want [3 7]", got)
	}
	// No subscription was touched, no tombstone made.
	for _, u := range []struct{ tenant, user string }{{"contoso.com", "a@contoso.com"}, {"contoso.com", "b@contoso.com"}, {"fabrikam.com", "x@fabrikam.com"}} {
		if n := f.count(t, u.tenant, u.user); n == 0 {
			t.Fatalf("%s lost its subscriptions to an app fault", u.user)
		}
	}
	if ts, err := f.tombs.List(f.ctx, pushlog.TombstoneFilter{}); err != nil || len(ts) != 0 {
		t.Fatalf("tombstones %v %v", ts, err)
	}

	// The credential is fixed: after the cool-down a trial push goes
	// through, and its delivery closes the breaker.
	broken["contoso.com/mail"] = false
	time.Sleep(250 * time.Millisecond)
	res = f.d.Send(f.ctx, []delivery.Push{f.push(8, a2)})
	if !res[0].Done() || res[0].Answer.Delivered["mail"] != 1 {
		t.Fatalf("trial push: %+v", res[0])
	}
	if p := f.d.Breakers().Paused(); len(p) != 0 {
		t.Fatalf("still paused after a delivered trial: %+v", p)
	}
	if res = f.d.Send(f.ctx, []delivery.Push{f.push(9, a1)}); !res[0].Done() {
		t.Fatalf("push after the breaker closed: %+v", res[0])
	}
}

func TestDeviceGoneVerdicts(t *testing.T) {
	tests := []struct {
		name      string
		verdict   func(sub subscriptions.Subscription) time.Time
		wantGone  bool
		wantTombs int
	}{
		{"verdict without a time", func(subscriptions.Subscription) time.Time { return time.Time{} }, true, 1},
		{"verdict newer than the subscription", func(s subscriptions.Subscription) time.Time { return s.LastSubscriptionUpdate.Add(time.Minute) }, true, 1},
		{"stale verdict keeps the subscription", func(s subscriptions.Subscription) time.Time { return s.LastSubscriptionUpdate.Add(-time.Hour) }, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, delivery.Policy{MaxElapsedTime: time.Second})
			sub := f.subscribe(t, "fabrikam.com", "erin@fabrikam.com", "mail", "old-phone")
			f.relay.setAnswer(func(int) relayAnswer {
				return relayAnswer{status: http.StatusOK, device: func(_ string, rc relayproto.Recipient) relayproto.DeviceResult {
					d := result(rc, relayproto.ClassDeviceGone, "apns: 410 Unregistered")
					d.VerdictAt = tt.verdict(sub)
					return d
				}}
			})
			res := f.d.Send(f.ctx, []delivery.Push{f.push(2, sub)})
			if !res[0].Done() {
				t.Fatalf("result %+v", res[0])
			}
			if left := f.count(t, sub.Tenant, sub.User); (left == 0) != tt.wantGone {
				t.Fatalf("%d subscriptions left, want gone=%v", left, tt.wantGone)
			}
			ts, err := f.tombs.List(f.ctx, pushlog.TombstoneFilter{Tenant: "fabrikam.com"})
			if err != nil || len(ts) != tt.wantTombs {
				t.Fatalf("tombstones %+v %v, want %d", ts, err, tt.wantTombs)
			}
			if tt.wantTombs == 0 {
				return
			}
			tomb := ts[0]
			if tomb.Subscription.DeviceID != "old-phone" || tomb.Reason != "apns: 410 Unregistered" || tomb.RemovedAt.IsZero() || tomb.By != delivery.OriginRedrive {
				t.Fatalf("tombstone %+v", tomb)
			}
			// The verdict proves wrong: restoring brings the record back.
			n, err := f.d.RestoreGone(f.ctx, f.keyer.UserKey(sub.Tenant, sub.User), f.push(2, sub).Notifications...)
			if err != nil || n != 1 || f.count(t, sub.Tenant, sub.User) != 1 {
				t.Fatalf("restore: %d %v, %d subscriptions", n, err, f.count(t, sub.Tenant, sub.User))
			}
			if ts, _ := f.tombs.List(f.ctx, pushlog.TombstoneFilter{}); len(ts) != 0 {
				t.Fatalf("tombstone left after restore: %+v", ts)
			}
		})
	}
}

func TestBackPressureLongerThanTheBudgetIsWaitedOut(t *testing.T) {
	// The budget is 300ms of failures; the relay throttles for about 1.2s
	// (429 with a back-off, then devices asking for a back-off) before
	// taking the push: nothing is given up.
	f := newFixture(t, delivery.Policy{InitialInterval: 50 * time.Millisecond, MaxElapsedTime: 300 * time.Millisecond})
	f.relay.setAnswer(func(n int) relayAnswer {
		switch {
		case n <= 3:
			return relayAnswer{status: http.StatusTooManyRequests, fault: &relayproto.Fault{Message: "slow down", CanRetry: true, BackOffTimeInMilliseconds: 250}}
		case n <= 5:
			return relayAnswer{status: http.StatusOK, device: func(_ string, rc relayproto.Recipient) relayproto.DeviceResult {
				d := result(rc, relayproto.ClassTransient, "apns: 429 TooManyRequests")
				d.BackOffTimeInMilliseconds = 250
				return d
			}}
		}
		return relayAnswer{status: http.StatusOK}
	})
	sub := f.subscribe(t, "fabrikam.com", "gina@fabrikam.com", "mail", "phone")
	start := time.Now()
	res := f.d.Send(f.ctx, []delivery.Push{f.push(3, sub)})
	if !res[0].Done() || res[0].Answer.DeliveredTotal() != 1 {
		t.Fatalf("gave up under back-pressure: %+v (err %v)", res[0], res[0].Err)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("took %s: the relay's back-off was not honoured", took)
	}
	if res[0].Sent == nil || res[0].Sent.Count != 3 {
		t.Fatalf("sent record %+v", res[0].Sent)
	}
}

func TestTransientFailuresSpendTheBudget(t *testing.T) {
	f := newFixture(t, delivery.Policy{InitialInterval: 20 * time.Millisecond, MaxElapsedTime: 200 * time.Millisecond})
	f.relay.setAnswer(func(int) relayAnswer {
		return relayAnswer{status: http.StatusInternalServerError, fault: &relayproto.Fault{Message: "broken", CanRetry: true}}
	})
	sub := f.subscribe(t, "fabrikam.com", "hal@fabrikam.com", "mail", "phone")
	res := f.d.Send(f.ctx, []delivery.Push{f.push(1, sub)})
	if res[0].Err == nil || !errors.Is(res[0].Err, delivery.ErrBudgetSpent) || res[0].Done() {
		t.Fatalf("result %+v, want the budget spent", res[0])
	}
}

func TestRetrierDoesNotCountBackPressure(t *testing.T) {
	r := delivery.NewRetrier(delivery.Policy{InitialInterval: 10 * time.Millisecond, MaxInterval: 10 * time.Millisecond, MaxElapsedTime: 50 * time.Millisecond})
	for range 4 {
		time.Sleep(r.Throttled(30 * time.Millisecond)) // 120ms of back-pressure, over the budget
	}
	if _, err := r.Failed(0); err != nil {
		t.Fatalf("back-pressure spent the budget: %v", err)
	}
	time.Sleep(60 * time.Millisecond)
	if _, err := r.Failed(0); !errors.Is(err, delivery.ErrBudgetSpent) {
		t.Fatalf("Failed after the budget = %v, want ErrBudgetSpent", err)
	}
}

// uriSwitch is a Publisher that fails on one Uri and records the Uris.
type uriSwitch struct {
	mu     sync.Mutex
	uris   []string
	resets int
}

func (u *uriSwitch) Publish(_ context.Context, uri string, batch []relayproto.Notification) (relayproto.Response, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.uris = append(u.uris, uri)
	if uri == "https://old.example/PushNotifications" {
		return relayproto.Response{}, &relayclient.Error{Class: relayclient.ClassNetworking, URI: uri, Err: errors.New("no such host")}
	}
	return relayproto.Response{Results: []relayproto.NotificationResult{{ID: batch[0].ID}}}, nil
}

func (u *uriSwitch) ResetBreaker() {
	u.mu.Lock()
	u.resets++
	u.mu.Unlock()
}

func TestChangedURIReachesTheNextAttempt(t *testing.T) {
	pub := &uriSwitch{}
	var mu sync.Mutex
	uri := "https://old.example/PushNotifications"
	source := func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		return uri, nil
	}
	notify := func(int, error, time.Duration) {
		mu.Lock()
		uri = "https://new.example/PushNotifications" // the operator fixes it
		mu.Unlock()
	}
	_, attempts, err := delivery.Publish(context.Background(), pub, source, []relayproto.Notification{{ID: "n"}},
		delivery.Policy{InitialInterval: 10 * time.Millisecond, MaxElapsedTime: 5 * time.Second}, notify)
	if err != nil || attempts != 2 {
		t.Fatalf("Publish: %d attempts, %v", attempts, err)
	}
	if len(pub.uris) != 2 || pub.uris[1] != "https://new.example/PushNotifications" || pub.resets != 1 {
		t.Fatalf("uris %v, %d breaker resets; want the new Uri on the second attempt and one reset", pub.uris, pub.resets)
	}
}

func TestPublishStopsBeforeTheDeadline(t *testing.T) {
	f := newFixture(t, delivery.Policy{})
	f.relay.setAnswer(func(int) relayAnswer {
		return relayAnswer{status: http.StatusTooManyRequests, fault: &relayproto.Fault{Message: "slow down", CanRetry: true, BackOffTimeInMilliseconds: 60000}}
	})
	ctx, cancel := context.WithTimeout(f.ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	client := relayclient.New(relayclient.Config{Tokens: staticToken{}, BreakerFailures: -1})
	_, _, err := delivery.Publish(ctx, client, f.relay.uri, []relayproto.Notification{{ID: "n", Recipients: []relayproto.Recipient{{AppID: "a", DeviceID: "d"}}}}, delivery.Policy{}, nil)
	if err == nil || time.Since(start) > time.Second {
		t.Fatalf("Publish = %v after %s, want an error at once: the relay's back-off ends after the deadline", err, time.Since(start))
	}
}
