// Package bucket takes from token buckets (golang.org/x/time/rate) so that
// a refused request leaves its bucket as it found it.
//
// Reserving and then cancelling (rate.Reservation.CancelAt) does not: a
// cancellation gives nothing back once another request has reserved after
// it, so concurrent refused requests leave a debt. A flood grows it to
// many seconds, holds the sender back long after it stopped, and outlives
// a raised limit.
package bucket

import (
	"time"

	"golang.org/x/time/rate"
)

// minWait is the least wait Take returns with a refusal, so that a caller
// never tells its client to come back at once.
const minWait = time.Millisecond

// Take takes n tokens from b at now when they are all there, and then
// reports true. Otherwise it takes none and returns how long until they
// would be, at b's rate from its tokens now. A request larger than b's
// burst costs the whole burst, so that it can pass once the bucket is
// full. b's limit must be positive (rate.Inf admits everything).
func Take(b *rate.Limiter, now time.Time, n int) (ok bool, wait time.Duration) {
	n = min(n, b.Burst())
	if b.AllowN(now, n) {
		return true, 0
	}
	missing := float64(n) - b.TokensAt(now)
	// Another request may have taken or left tokens since AllowN: the wait
	// is for a bucket that refills from here, and never nothing.
	return false, max(time.Duration(missing/float64(b.Limit())*float64(time.Second)), minWait)
}
