package dispatcher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

const tenant = "fabrikam.com"

// staticTokens is a token source for the test relay, which checks nothing.
type staticTokens struct{}

func (staticTokens) Token(context.Context) (string, error) { return "test-token", nil }

// answer is what the test relay says to one request.
type answer struct {
	status int
	header http.Header
	fault  *relayproto.Fault
	// device decides a device's status (delivered when nil).
	device func(n relayproto.Notification, r relayproto.Recipient) relayproto.DeviceResult
}

// testRelay speaks the relay protocol, records the counts delivered to each
// device and lets a test decide each answer.
type testRelay struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	answer   func(n int) answer // by request number, from 1
	requests int
	arrivals []time.Time
	counts   map[string][]int // by device id, in delivery order
	batches  []int            // notifications per accepted request
}

func newTestRelay(t testing.TB) *testRelay {
	r := &testRelay{t: t, counts: map[string][]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *testRelay) URI() string { return r.srv.URL + "/PushNotifications" }

func (r *testRelay) setAnswer(f func(n int) answer) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

func (r *testRelay) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/PushNotifications"+relayproto.PublishPath {
		http.NotFound(w, req)
		return
	}
	var body relayproto.Request
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.requests++
	n := r.requests
	r.arrivals = append(r.arrivals, time.Now())
	a := answer{status: http.StatusOK}
	if r.answer != nil {
		a = r.answer(n)
	}
	r.mu.Unlock()
	for k, v := range a.header {
		w.Header()[k] = v
	}
	if a.status != http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		if a.fault != nil {
			_ = json.NewEncoder(w).Encode(a.fault)
		}
		return
	}
	var resp relayproto.Response
	r.mu.Lock()
	r.batches = append(r.batches, len(body.Notifications))
	for _, note := range body.Notifications {
		res := relayproto.NotificationResult{ID: note.ID}
		for _, rc := range note.Recipients {
			dr := relayproto.DeviceResult{AppID: rc.AppID, DeviceID: rc.DeviceID, Status: relayproto.DeviceDelivered}
			if a.device != nil {
				dr = a.device(note, rc)
			}
			if dr.Status == relayproto.DeviceDelivered {
				r.counts[rc.DeviceID] = append(r.counts[rc.DeviceID], note.Payload.UnseenEmailCount)
			}
			res.Devices = append(res.Devices, dr)
		}
		resp.Results = append(resp.Results, res)
	}
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// pushes returns the counts delivered to device.
func (r *testRelay) pushes(device string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.counts[device]...)
}

func (r *testRelay) requestCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

func (r *testRelay) arrivalTimes() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.arrivals...)
}

// env is a provisioned JetStream with a test relay and the proxy enabled.
type env struct {
	t     testing.TB
	conn  *broker.Conn
	keyer *events.Keyer
	relay *testRelay
	subs  *subscriptions.Store
	state *unread.Store
	pub   jetstream.JetStream
}

func newEnv(t testing.TB, opts ...brokertest.Option) *env {
	t.Helper()
	conn := brokertest.Start(t, opts...)
	ctx := context.Background()
	e := &env{t: t, conn: conn, keyer: brokertest.Keyer(t, conn), relay: newTestRelay(t), pub: conn.JS}
	var err error
	if e.subs, err = subscriptions.Open(ctx, conn.JS, e.keyer); err != nil {
		t.Fatal(err)
	}
	if e.state, err = unread.Open(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) enableProxy() {
	e.t.Helper()
	store, err := settings.Open(context.Background(), e.conn.JS)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := store.EnableProxy(context.Background(), tenant, e.relay.URI()); err != nil {
		e.t.Fatal(err)
	}
}

func userName(i int) string { return fmt.Sprintf("user%03d@%s", i, tenant) }

func deviceOf(user string) string { return "dev-" + user }

// subscribe registers one device (deviceOf(user)) per user.
func (e *env) subscribe(users ...string) {
	e.t.Helper()
	for _, u := range users {
		_, _, err := e.subs.Put(context.Background(), subscriptions.Subscription{
			Tenant: tenant, User: u, AppID: "com.example.mail", DeviceID: deviceOf(u), Platform: subscriptions.PlatformAPNS,
			Options: subscriptions.OptionEmail, Language: "en-GB",
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

var changeSeq struct {
	sync.Mutex
	n int
}

func nextChangeID() string {
	changeSeq.Lock()
	defer changeSeq.Unlock()
	changeSeq.n++
	return fmt.Sprintf("change-%d", changeSeq.n)
}

func newEvent(user string, kind events.Kind, count int, unreadCount *int) events.Event {
	ev := events.Event{Tenant: tenant, User: user, Kind: kind, Count: count, Unread: unreadCount,
		ChangeID: nextChangeID(), OccurredAt: time.Now().UTC(), ReceivedAt: time.Now().UTC()}
	if kind == events.KindMoved {
		ev.Mailbox, ev.FromMailbox = "Archive", events.Inbox
	}
	ev.Normalize()
	return ev
}

// publish stores events in order (asynchronously, one connection, so in
// order) and waits for the stream's acks.
func (e *env) publish(evs ...events.Event) {
	e.t.Helper()
	var futures []jetstream.PubAckFuture
	for i := range evs {
		ev := evs[i]
		if err := ev.Validate(); err != nil {
			e.t.Fatalf("test event invalid: %v", err)
		}
		data, err := ev.Encode()
		if err != nil {
			e.t.Fatal(err)
		}
		msg := &nats.Msg{Subject: e.keyer.Subject(ev.Tenant, ev.User), Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, e.keyer.MsgID(&ev))
		f, err := e.pub.PublishMsgAsync(msg)
		if err != nil {
			e.t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			e.t.Fatalf("publishing: %v", err)
		case <-time.After(30 * time.Second):
			e.t.Fatal("publish not acknowledged within 30s")
		}
	}
}

// testConfig has short timers; failures in tests show quickly.
func testConfig() dispatcher.Config {
	return dispatcher.Config{
		Coalesce:         coalesce.Config{Window: 30 * time.Millisecond, Debounce: 50 * time.Millisecond, MaxDelay: 500 * time.Millisecond},
		Tokens:           staticTokens{},
		Relay:            relayclient.Config{Timeout: 5 * time.Second, BreakerFailures: 5, BreakerCooldown: 200 * time.Millisecond, BreakerMaxCooldown: 400 * time.Millisecond},
		Retry:            delivery.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxElapsedTime: 3 * time.Second},
		AckWait:          2 * time.Second,
		PinnedTTL:        2 * time.Second,
		Heartbeat:        100 * time.Millisecond,
		RetryDelay:       50 * time.Millisecond,
		MaxRetryDelay:    300 * time.Millisecond,
		SettingsInterval: 100 * time.Millisecond,
		MetricsInterval:  200 * time.Millisecond,
		ShutdownTimeout:  3 * time.Second,
	}
}

// testLogger is silent unless PUSHPROXY_TEST_LOG names a level.
func testLogger() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(os.Getenv("PUSHPROXY_TEST_LOG"))
	if err != nil || os.Getenv("PUSHPROXY_TEST_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).Level(lvl).With().Timestamp().Logger()
}

// running is a dispatcher started by a test.
type running struct {
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

// start runs a dispatcher with cfg on conn until the test ends; its
// metrics go to reg when given, to a registry of its own otherwise.
func (e *env) start(conn *broker.Conn, cfg dispatcher.Config, reg ...*prometheus.Registry) *running {
	e.t.Helper()
	r := &running{done: make(chan error, 1), reg: prometheus.NewRegistry()}
	if len(reg) > 0 {
		r.reg = reg[0]
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	d, err := dispatcher.New(ctx, cfg, conn, testLogger(), r.reg)
	if err != nil {
		cancel()
		e.t.Fatalf("dispatcher.New: %v", err)
	}
	go func() { r.done <- d.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

func (r *running) stop(t testing.TB) {
	r.cancel()
	select {
	case <-r.done:
		r.done <- nil // later stops return at once
	case <-time.After(30 * time.Second):
		t.Error("dispatcher did not stop within 30s")
	}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastPushed is the last count delivered to the user's device, or -1.
func (e *env) lastPushed(user string) int {
	p := e.relay.pushes(deviceOf(user))
	if len(p) == 0 {
		return -1
	}
	return p[len(p)-1]
}

// finalCount folds a user's events, in order, the way the dispatcher does.
func finalCount(evs []events.Event) int {
	var st unread.State
	for i := range evs {
		st, _ = unread.Apply(st, &evs[i], uint64(i+1), unread.Options{})
	}
	return st.Count
}

// metricValue sums the samples of a counter or gauge family with the given
// label values (name=value pairs), 0 when absent.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !labelsMatch(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			case m.Histogram != nil:
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// ackPending sums the unacknowledged events of every dispatcher consumer.
func ackPending(t testing.TB, js jetstream.JetStream) (pending uint64, ack int) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, broker.StreamMail)
	if err != nil {
		t.Fatal(err)
	}
	for info := range s.ListConsumers(ctx).Info() {
		if strings.HasPrefix(info.Name, dispatcher.DefaultConsumerPrefix+"-p") {
			pending += info.NumPending
			ack += info.NumAckPending
		}
	}
	return pending, ack
}

// settled reports that every event was delivered and acknowledged.
func settled(t testing.TB, e *env) bool {
	pending, ack := ackPending(t, e.conn.JS)
	return pending == 0 && ack == 0
}

// streamMessages returns the data of every message of stream.
func streamMessages(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	return brokertest.Messages(t, js, stream)
}
