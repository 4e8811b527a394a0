package relay

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pushproxy/pushproxy/internal/providers"
)

// minOutageBackOff is the back-off of a "retry" answer in the first
// seconds of a push service's outage.
const minOutageBackOff = time.Second

// outageShare is the back-off of a "retry" answer during a push service's
// outage, as a share of how long the outage has lasted: a dispatcher
// retries often while it has just failed and seldom once it has been down
// long, so that a short outage delays the badges a little, not 30 s.
const outageShare = 4

// outageTrialEvery is how often one send of an organization+app goes
// through to its push service once the service has been down that long:
// a trial, to see whether it is back. The other sends are answered
// "retry" without being sent.
const outageTrialEvery = time.Second

// outages tracks, per push service of an organization+app (outageKey:
// for a Web Push app, each push service its subscriptions reach), since
// when it has failed as a whole: a server error (5xx), no connection, or no answer
// within the lane's timeout (to the send, or to every send of the
// organization's app in flight before it), with no answer in between.
//
// A "retry" answer during an outage carries a back-off that grows with
// the outage, from minOutageBackOff to the relay's RetryBackOff, where a
// fixed RetryBackOff (30 s) held every badge that long after a blip of a
// few seconds. Once the outage has lasted outageTrialEvery, one send per
// outageTrialEvery goes through (pass) and the others are answered at
// once: a push service that is down meets a trial a second from each
// organization+app, not every retry of every dispatcher (3,145 sends in
// 20 s of 503s in a chaos run, before). Any answer of the push service (a
// delivery, a refusal, a device gone) ends the outage. One entry per
// organization+app whose push service is down.
type outages struct {
	max time.Duration

	mu    sync.Mutex
	down  map[outageKey]outage
	swept time.Time // when forget last ran
}

// outage is one organization+app's push service down: since when, when
// the last send went through, and when the last send failed.
type outage struct {
	since, trial, last time.Time
}

func newOutages(max time.Duration) *outages {
	return &outages{max: max, down: map[outageKey]outage{}}
}

// failed records a failure of k's push service as a whole at now and
// returns the back-off to answer with, and whether it began an outage.
func (o *outages) failed(k outageKey, now time.Time) (backOff time.Duration, began bool) {
	o.mu.Lock()
	o.forget(now)
	out, ok := o.down[k]
	if !ok {
		out = outage{since: now, trial: now}
	}
	out.last = now
	o.down[k] = out
	o.mu.Unlock()
	return o.backOff(now.Sub(out.since)), !ok
}

// outageForget is how long after its last failure an outage is dropped:
// nothing was sent to that push service since, and it may be back.
const outageForget = 10 * time.Minute

// forget drops, at most once per outageForget, the outages whose last
// failure is older than outageForget. A Web Push app's subscriptions may
// name many push services (their endpoints' hosts); without it, one entry
// per host that ever failed would stay. Called with o.mu held.
func (o *outages) forget(now time.Time) {
	if now.Sub(o.swept) < outageForget {
		return
	}
	o.swept = now
	for k, out := range o.down {
		if now.Sub(out.last) >= outageForget {
			delete(o.down, k)
		}
	}
}

// pass reports whether a send of k may go to its push service at now:
// yes, unless the service has been down for outageTrialEvery or longer and
// a send went through less than outageTrialEvery ago. Otherwise the send
// is held, and the error says for how long the service has been down and
// the back-off to answer with.
func (o *outages) pass(k outageKey, now time.Time) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	out, ok := o.down[k]
	if !ok || now.Sub(out.since) < outageTrialEvery || now.Sub(out.trial) >= outageTrialEvery {
		if ok {
			out.trial = now
			o.down[k] = out
		}
		return nil
	}
	age := now.Sub(out.since)
	return &heldByOutage{down: age, backOff: o.backOff(age)}
}

// heldByOutage is a send not sent because its organization+app's push
// service is down (outages.pass).
type heldByOutage struct {
	down, backOff time.Duration
}

func (e *heldByOutage) Error() string {
	return fmt.Sprintf("the push service has failed for %s; one send per %s goes through until it answers", e.down.Round(time.Second), outageTrialEvery)
}

// backOff is the back-off of an outage that has lasted age.
func (o *outages) backOff(age time.Duration) time.Duration {
	return min(max(age/outageShare, minOutageBackOff), o.max)
}

// answered records that k's push service answered at now: its outage, if
// any, is over, and lasted that long.
func (o *outages) answered(k outageKey, now time.Time) (lasted time.Duration, ended bool) {
	o.mu.Lock()
	out, ok := o.down[k]
	delete(o.down, k)
	o.mu.Unlock()
	if !ok {
		return 0, false
	}
	return now.Sub(out.since), true
}

// outageRecent is how recent an outage's last failure must be for ages to
// show it: an organization+app that sent nothing since may be back.
const outageRecent = time.Minute

// ages returns how long the push service of each organization+app has
// been down at now, for the outages with a failure within outageRecent;
// for a Web Push app, the longest outage among its push services.
func (o *outages) ages(now time.Time) map[appKey]time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[appKey]time.Duration, len(o.down))
	for k, d := range o.down {
		if now.Sub(d.last) < outageRecent {
			out[k.appKey] = max(out[k.appKey], now.Sub(d.since))
		}
	}
	return out
}

// serviceDown reports whether err says the push service failed as a
// whole, rather than refusing one device or asking to slow down: a
// retryable error with a server status (5xx) or none (no connection, no
// answer), and no Retry-After of its own.
func serviceDown(err error) bool {
	var e *providers.Error
	if !errors.As(err, &e) {
		return providers.IsRetryable(err)
	}
	return e.Retryable && e.RetryAfter <= 0 && (e.Status == 0 || e.Status >= 500)
}
