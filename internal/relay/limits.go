package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// tenantLimiter is a token bucket per tenant: each notification of a
// request takes a token, so one noisy organisation is slowed down without
// touching the others.
type tenantLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// newTenantLimiter allows perSecond notifications per tenant with bursts of
// burst. perSecond <= 0 turns the limit off.
func newTenantLimiter(perSecond float64, burst int) *tenantLimiter {
	return &tenantLimiter{limit: rate.Limit(perSecond), burst: max(burst, 1), buckets: map[string]*rate.Limiter{}}
}

// reserve takes n tokens from tenant's bucket at now. When there are not
// enough it takes none and returns how long to wait before they would be
// there. A request larger than the burst costs the whole burst, so that it
// can pass once the bucket is full.
func (l *tenantLimiter) reserve(tenant string, n int, now time.Time) (ok bool, wait time.Duration) {
	if l.limit <= 0 || n <= 0 {
		return true, 0
	}
	l.mu.Lock()
	b, found := l.buckets[tenant]
	if !found {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[tenant] = b
	}
	l.mu.Unlock()
	r := b.ReserveN(now, min(n, l.burst))
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Limit bounds the sends to one provider kind: at most Concurrency at once
// across all requests, and each request's sends to it finish within Timeout
// (those still waiting or sending then are answered "retry"). In Limits, a
// zero Timeout means the default limit's.
type Limit struct {
	Concurrency int
	Timeout     time.Duration
}

// String prints l in the flag syntax, e.g. "64/10s".
func (l Limit) String() string {
	if l.Timeout == 0 {
		return strconv.Itoa(l.Concurrency)
	}
	return strconv.Itoa(l.Concurrency) + "/" + l.Timeout.String()
}

// Limits are per provider kind ("apns", "fcm", "webpush", "log"); a kind
// without an entry gets the default.
type Limits map[string]Limit

// LimitsFlag is a flag.Value that sets per-kind limits from
// "kind=concurrency[/timeout]" items, comma-separated or repeated, e.g.
// "apns=128/15s,fcm=64".
type LimitsFlag struct {
	Limits *Limits
}

// String prints the limits set so far, by kind.
func (f LimitsFlag) String() string {
	if f.Limits == nil {
		return ""
	}
	items := make([]string, 0, len(*f.Limits))
	for kind, l := range *f.Limits {
		items = append(items, kind+"="+l.String())
	}
	slices.Sort(items)
	return strings.Join(items, ",")
}

// Set parses kind=concurrency[/timeout] items.
func (f LimitsFlag) Set(v string) error {
	if *f.Limits == nil {
		*f.Limits = Limits{}
	}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kind, spec, ok := strings.Cut(item, "=")
		if !ok || kind == "" {
			return fmt.Errorf("%q is not kind=concurrency[/timeout]", item)
		}
		var l Limit
		conc, timeout, hasTimeout := strings.Cut(spec, "/")
		n, err := strconv.Atoi(conc)
		if err != nil || n < 1 {
			return fmt.Errorf("%q: concurrency %q is not a positive number", item, conc)
		}
		l.Concurrency = n
		if hasTimeout {
			d, err := time.ParseDuration(timeout)
			if err != nil || d <= 0 {
				return fmt.Errorf("%q: timeout %q is not a positive duration", item, timeout)
			}
			l.Timeout = d
		}
		(*f.Limits)[strings.ToLower(kind)] = l
	}
	return nil
}

// lane is the path to one provider kind: a semaphore bounding its
// concurrent sends, and the time a request gives it.
type lane struct {
	kind    string
	sem     chan struct{}
	timeout time.Duration
}

// lanes hands out one lane per provider kind.
type lanes struct {
	limits Limits
	def    Limit

	mu    sync.Mutex
	lanes map[string]*lane
}

func newLanes(limits Limits, def Limit) *lanes {
	return &lanes{limits: limits, def: def, lanes: map[string]*lane{}}
}

// get returns the lane of kind, creating it on first use.
func (ls *lanes) get(kind string) *lane {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l, ok := ls.lanes[kind]; ok {
		return l
	}
	lim, ok := ls.limits[kind]
	if !ok {
		lim = ls.def
	}
	if lim.Timeout == 0 {
		lim.Timeout = ls.def.Timeout
	}
	l := &lane{kind: kind, sem: make(chan struct{}, max(lim.Concurrency, 1)), timeout: lim.Timeout}
	ls.lanes[kind] = l
	return l
}

// errLaneTimeout means the provider's lane timed out before a send could
// start or finish.
var errLaneTimeout = errors.New("provider did not answer in time")

// acquire waits for a free slot of the lane until ctx ends.
func (l *lane) acquire(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return errLaneTimeout
	}
}

// release frees the slot taken by acquire.
func (l *lane) release() { <-l.sem }
