package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// A user's true Inbox count only ever grows: every event is a "new" of one
// message, so the count after a user's k-th acknowledged event is k. Most
// events are deltas (the dispatcher adds one to its count and marks it
// estimated); about one in authoritativeEvery carries the true count. So a
// device must never see a lower badge after a higher one, and its final
// badge must be the number of its acknowledged events.
const authoritativeEvery = 20

// ack is one event that ingest acknowledged with 2xx.
type ack struct {
	count    int // the user's true count after the event
	changeID string
	seq      uint64
	sent     time.Time // when its first attempt was sent
	at       time.Time // when its acknowledgement arrived
	attempts int
}

// user is one mailbox of the oracle, with one device.
type user struct {
	name   string
	device string

	busy     bool // an event is on its way (at most one at a time, for order)
	acked    []ack
	rejected []string // 4xx answers: a harness or ingest bug
}

// oracle knows each user's true count from what ingest acknowledged.
type oracle struct {
	mu    sync.Mutex
	users []*user
	byDev map[string]int
	// counters
	retries  int
	answers  map[string]int // ingest outcomes by status or error class
	inflight int
	unacked  []string // events still unacknowledged when the drain ended
}

// newOracle makes n users of organization org, each with one APNs device.
func newOracle(n int, org string) *oracle {
	o := &oracle{byDev: map[string]int{}, answers: map[string]int{}}
	for i := range n {
		u := &user{name: fmt.Sprintf("user%05d@%s", i, org), device: deviceOf(org, i)}
		o.users = append(o.users, u)
		o.byDev[u.device] = i
	}
	return o
}

// deviceOf is the device token of user i of organization org.
func deviceOf(org string, i int) string {
	sum := sha256.Sum256([]byte("chaos-device-" + org + "-" + strconv.Itoa(i)))
	return hex.EncodeToString(sum[:])
}

// countAt returns user i's true count as known at t.
func (o *oracle) countAt(i int, t time.Time) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, a := range o.users[i].acked {
		if a.at.After(t) {
			break
		}
		n = a.count
	}
	return n
}

// firstSentAfter returns the count of user i's first acknowledged event
// that was first sent after t, or 0. No process that was dead at t can
// have seen that event (an earlier attempt, stored but answered too late,
// would have been sent before t).
func (o *oracle) firstSentAfter(i int, t time.Time) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, a := range o.users[i].acked {
		if a.sent.After(t) {
			return a.count
		}
	}
	return 0
}

// final returns every user's true count.
func (o *oracle) final() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]int, len(o.users))
	for i, u := range o.users {
		out[i] = len(u.acked)
	}
	return out
}

// ingestClient talks to ingest's native and subscriptions APIs, for the
// users of one organization with devices of its app.
type ingestClient struct {
	base   string
	tenant tenant
	http   *http.Client
}

func newIngestClient(addr string, t tenant) *ingestClient {
	return &ingestClient{base: "http://" + addr, tenant: t, http: &http.Client{Timeout: 10 * time.Second}}
}

// do sends a JSON request and returns the status, the body and the
// Retry-After it asked for.
func (c *ingestClient) do(ctx context.Context, method, path string, body any) (int, []byte, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, 0, fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+ingestToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	var retry time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		retry = time.Duration(s) * time.Second
	}
	return resp.StatusCode, data, retry, nil
}

// subscribe subscribes every user's device, retrying transient failures.
func (c *ingestClient) subscribe(ctx context.Context, o *oracle) error {
	sem := make(chan struct{}, 16)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, u := range o.users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			body := map[string]any{"tenant": c.tenant.org, "user": u.name, "appId": c.tenant.app, "deviceId": u.device, "platform": "APNS"}
			err := retryTransient(ctx, func() (bool, error) {
				code, data, _, err := c.do(ctx, http.MethodPost, "/v1/subscriptions", body)
				switch {
				case err != nil || code >= 500:
					return false, answerError("subscribing "+u.name, code, data, err)
				case code != http.StatusCreated && code != http.StatusOK:
					return true, answerError("subscribing "+u.name, code, data, nil)
				}
				return true, nil
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// subscribed reports whether user u's device is still subscribed.
func (c *ingestClient) subscribed(ctx context.Context, u *user) (bool, error) {
	var found bool
	err := retryTransient(ctx, func() (bool, error) {
		code, data, _, err := c.do(ctx, http.MethodGet, "/v1/subscriptions?tenant="+c.tenant.org+"&user="+u.name, nil)
		if err != nil || code >= 500 {
			return false, answerError("listing the subscriptions of "+u.name, code, data, err)
		}
		if code != http.StatusOK {
			return true, answerError("listing the subscriptions of "+u.name, code, data, nil)
		}
		var list struct {
			Subscriptions []struct {
				AppID    string `json:"appId"`
				DeviceID string `json:"deviceId"`
			} `json:"subscriptions"`
		}
		if err := json.Unmarshal(data, &list); err != nil {
			return true, fmt.Errorf("listing %s: %w", u.name, err)
		}
		for _, s := range list.Subscriptions {
			// Device ids may be shown by reference only; one device per user.
			if s.AppID == c.tenant.app {
				found = true
			}
		}
		return true, nil
	})
	return found, err
}

// answerError describes a failed request: its transport error, or the
// status and body ingest answered.
func answerError(what string, code int, body []byte, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %d %s", what, code, bytes.TrimSpace(body))
}

// retryTransient calls f until it says done or ctx ends, backing off.
func retryTransient(ctx context.Context, f func() (done bool, err error)) error {
	wait := 100 * time.Millisecond
	for {
		done, err := f()
		if done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// loadOptions shape the load.
type loadOptions struct {
	rate        float64 // events per second, all users together
	maxInflight int     // most requests at once (more ticks are skipped)
}

// generator sends events at a steady rate, one at a time per user, each
// retried with the same change_id until ingest acknowledges it.
type generator struct {
	o      *oracle
	c      *ingestClient
	opts   loadOptions
	rng    *rand.Rand // used under o.mu
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	ticker sync.WaitGroup
	sends  sync.WaitGroup
}

// startLoad starts sending; drain stops it.
func startLoad(o *oracle, c *ingestClient, opts loadOptions, rng *rand.Rand) *generator {
	g := &generator{o: o, c: c, opts: opts, rng: rng, stop: make(chan struct{})}
	// The sends' context outlives the ticking so that retries can finish
	// during drain; drain ends it at its deadline.
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.ticker.Go(g.run)
	return g
}

// run ticks at the rate and starts one send per tick.
func (g *generator) run() {
	tick := time.NewTicker(time.Duration(float64(time.Second) / g.opts.rate))
	defer tick.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-tick.C:
		}
		if i, ok := g.pick(); ok {
			g.sends.Go(func() { g.send(g.ctx, i) })
		}
	}
}

// pick chooses an idle user at random and marks it busy.
func (g *generator) pick() (int, bool) {
	g.o.mu.Lock()
	defer g.o.mu.Unlock()
	if g.o.inflight >= g.opts.maxInflight {
		g.o.answers["skipped (too many in flight)"]++
		return 0, false
	}
	n := len(g.o.users)
	start := g.rng.IntN(n)
	for k := range n {
		i := (start + k) % n
		if u := g.o.users[i]; !u.busy && len(u.rejected) == 0 {
			u.busy = true
			g.o.inflight++
			return i, true
		}
	}
	return 0, false
}

// send sends user i's next event until ingest acknowledges it or ctx ends.
func (g *generator) send(ctx context.Context, i int) {
	o := g.o
	o.mu.Lock()
	u := o.users[i]
	count := len(u.acked) + 1
	changeID := fmt.Sprintf("chaos-%d-%d", i, count)
	ev := map[string]any{"user": u.name, "kind": "new", "change_id": changeID, "occurred_at": time.Now().UTC().Format(time.RFC3339Nano)}
	if g.rng.IntN(authoritativeEvery) == 0 {
		ev["unread"] = count
	}
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		u.busy = false
		o.inflight--
		o.mu.Unlock()
	}()
	wait := 100 * time.Millisecond
	sent := time.Now()
	for attempt := 1; ; attempt++ {
		code, data, retryAfter, err := g.c.do(ctx, http.MethodPost, "/v1/events", ev)
		outcome := strconv.Itoa(code)
		if err != nil {
			outcome = "error"
		}
		o.mu.Lock()
		o.answers[outcome]++
		o.mu.Unlock()
		switch {
		case err == nil && code == http.StatusOK:
			var r struct {
				Events []struct {
					Outcome string `json:"outcome"`
					Seq     uint64 `json:"seq"`
				} `json:"events"`
			}
			if jerr := json.Unmarshal(data, &r); jerr != nil || len(r.Events) != 1 {
				o.mu.Lock()
				u.rejected = append(u.rejected, fmt.Sprintf("%s: 200 with an answer we cannot read: %s", changeID, data))
				o.mu.Unlock()
				return
			}
			o.mu.Lock()
			u.acked = append(u.acked, ack{count: count, changeID: changeID, seq: r.Events[0].Seq, sent: sent, at: time.Now(), attempts: attempt})
			o.mu.Unlock()
			return
		case err == nil && code < 500:
			o.mu.Lock()
			u.rejected = append(u.rejected, fmt.Sprintf("%s: %d %s", changeID, code, bytes.TrimSpace(data)))
			o.mu.Unlock()
			return
		}
		// 5xx, timeout or connection error: the same event again.
		o.mu.Lock()
		o.retries++
		o.mu.Unlock()
		if retryAfter > 0 {
			wait = min(retryAfter, 2*time.Second)
		}
		select {
		case <-ctx.Done():
			o.mu.Lock()
			o.unacked = append(o.unacked, fmt.Sprintf("%s %s after %d attempts (last: %d %v)", u.name, changeID, attempt, code, err))
			o.mu.Unlock()
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// drain stops new events and waits until every event on its way is
// acknowledged, at most timeout. It returns the events never acknowledged.
func (g *generator) drain(timeout time.Duration) []string {
	close(g.stop)
	g.ticker.Wait()
	done := make(chan struct{})
	go func() { g.sends.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		g.cancel()
		<-done
	}
	g.cancel()
	g.o.mu.Lock()
	defer g.o.mu.Unlock()
	return append([]string(nil), g.o.unacked...)
}
