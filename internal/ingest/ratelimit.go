package ingest

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pushproxy/pushproxy/internal/bucket"
	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/httpjson"
)

// CodeRateLimited is the error code of a 429 answer.
const CodeRateLimited = "rate_limited"

// RateLimits keeps one token bucket per credential id.
type RateLimits struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// NewRateLimits returns limits of perSecond requests on average and burst
// at once per credential; perSecond 0 means no limit.
func NewRateLimits(perSecond float64, burst int) *RateLimits {
	return &RateLimits{limit: rate.Limit(perSecond), burst: burst, buckets: map[string]*rate.Limiter{}}
}

// Middleware answers 429 with Retry-After when the request's credential
// (from RequireAuth, which must come first) is over its rate.
func (l *RateLimits) Middleware() Middleware {
	return func(next http.Handler) http.Handler {
		if l == nil || l.limit <= 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			scope, ok := credentials.FromContext(r.Context())
			if ok {
				if allowed, delay := bucket.Take(l.bucket(scope.ID), time.Now(), 1); !allowed {
					w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(delay, time.Second).Seconds()))))
					Reject(w, &httpjson.Error{Status: http.StatusTooManyRequests, Code: CodeRateLimited,
						Message: "credential " + scope.ID + " is over its request rate; retry after the Retry-After seconds"})
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// bucket returns the credential's token bucket. Credential ids are few
// (one per configured or created credential), so the map stays small.
func (l *RateLimits) bucket(id string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[id]
	if b == nil {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[id] = b
	}
	return b
}
