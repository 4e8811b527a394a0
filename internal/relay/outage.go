package relay

import (
	"errors"
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

// outages tracks, per organization+app, since when its push service has
// failed as a whole: a server error (5xx), no connection, or no answer
// within the lane's timeout (to the send, or to every send of the
// organization's app in flight before it), with no answer in between. A
// "retry" answer for such a failure carries a back-off that grows with
// the outage, from minOutageBackOff to the relay's RetryBackOff, where a
// fixed RetryBackOff (30 s) held every badge that long after a blip of a
// few seconds. Any answer of the push service (a delivery, a refusal, a
// device gone) ends the outage. One entry per organization+app whose push
// service is down.
type outages struct {
	max time.Duration

	mu    sync.Mutex
	since map[appKey]time.Time
}

func newOutages(max time.Duration) *outages {
	return &outages{max: max, since: map[appKey]time.Time{}}
}

// failed records a failure of k's push service as a whole at now and
// returns the back-off to answer with.
func (o *outages) failed(k appKey, now time.Time) time.Duration {
	o.mu.Lock()
	since, ok := o.since[k]
	if !ok {
		since = now
		o.since[k] = now
	}
	o.mu.Unlock()
	return o.backOff(now.Sub(since))
}

// backOff is the back-off of an outage that has lasted age.
func (o *outages) backOff(age time.Duration) time.Duration {
	return min(max(age/outageShare, minOutageBackOff), o.max)
}

// answered records that k's push service answered: its outage, if any,
// is over.
func (o *outages) answered(k appKey) {
	o.mu.Lock()
	delete(o.since, k)
	o.mu.Unlock()
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
