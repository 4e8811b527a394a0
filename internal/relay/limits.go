package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pushproxy/pushproxy/internal/bucket"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
)

// QuotaSource gives an organization's own quota, which overrides the
// relay's TenantRate and TenantBurst for it. *registry.PartnerCache is one:
// the quota lives in the partner's registration.
type QuotaSource interface {
	// Quota returns organization's own quota, already checked, and whether
	// it has one.
	Quota(organization string) (registry.Quota, bool)
}

var _ QuotaSource = (*registry.PartnerCache)(nil)

// quota is the token bucket's setting for one tenant: notifications per
// second and burst. A limit of 0 or less is no limit.
type quota struct {
	limit rate.Limit
	burst int
}

// tenantLimiter is a token bucket per tenant: each notification of a
// request takes a token, so one noisy organisation is slowed down without
// touching the others. A tenant's bucket follows its own quota, when the
// quota source has one, at its next request.
type tenantLimiter struct {
	def    quota
	quotas QuotaSource // nil: every tenant has the default

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// newTenantLimiter allows perSecond notifications per tenant with bursts of
// burst, unless quotas gives the tenant a quota of its own. perSecond <= 0
// turns the default limit off.
func newTenantLimiter(perSecond float64, burst int, quotas QuotaSource) *tenantLimiter {
	return &tenantLimiter{def: quota{limit: rate.Limit(perSecond), burst: max(burst, 1)}, quotas: quotas, buckets: map[string]*rate.Limiter{}}
}

// quotaOf is the quota that applies to tenant now.
func (l *tenantLimiter) quotaOf(tenant string) quota {
	if l.quotas != nil {
		if q, ok := l.quotas.Quota(tenant); ok {
			return quota{limit: rate.Limit(q.Rate), burst: q.Burst}
		}
	}
	return l.def
}

// reserve takes n tokens from tenant's bucket at now, or none and the
// wait before they would be there (bucket.Take: a refused request leaves
// no debt). A request larger than the burst costs the whole burst. It
// returns the quota it applied.
func (l *tenantLimiter) reserve(tenant string, n int, now time.Time) (ok bool, wait time.Duration, q quota) {
	q = l.quotaOf(tenant)
	if q.limit <= 0 || n <= 0 {
		return true, 0, q
	}
	ok, wait = bucket.Take(l.bucket(tenant, q, now), now, n)
	return ok, wait, q
}

// bucket returns tenant's bucket set to q, creating it full.
func (l *tenantLimiter) bucket(tenant string, q quota, now time.Time) *rate.Limiter {
	l.mu.Lock()
	b, found := l.buckets[tenant]
	if !found {
		b = rate.NewLimiter(q.limit, q.burst)
		l.buckets[tenant] = b
	}
	l.mu.Unlock()
	if b.Limit() != q.limit {
		b.SetLimitAt(now, q.limit)
	}
	if b.Burst() != q.burst {
		b.SetBurstAt(now, q.burst)
	}
	return b
}

// tenants returns the tenants that have a bucket: those that sent since
// the relay started while a limit applied to them.
func (l *tenantLimiter) tenants() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Collect(maps.Keys(l.buckets))
}

// Limit bounds the sends to one provider kind: at most Concurrency at once
// across all requests, and each request's sends to it finish within Timeout
// (those still waiting or sending then are answered "retry"). In Limits, a
// zero Timeout means the default limit's.
type Limit struct {
	Concurrency int
	Timeout     time.Duration
}

// share is how many of the limit's Concurrency slots one organization+app
// may hold at once: perApp when set (at most Concurrency), else a quarter
// of Concurrency (at least 1).
func (l Limit) share(perApp int) int {
	if perApp > 0 {
		return min(perApp, l.Concurrency)
	}
	return max(l.Concurrency/shareDivisor, 1)
}

// shareDivisor is the default share of an organization+app: one quarter of
// a push service's slots, so that at least four organizations+apps whose
// push service hangs are needed to take all of them.
const shareDivisor = 4

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
// concurrent sends across all tenants, a bulkhead per organization+app
// bounding that one's share of them, and the time a request gives it.
type lane struct {
	kind    string
	sem     chan struct{}
	share   int
	timeout time.Duration

	mu        sync.Mutex
	bulkheads map[appKey]*bulkhead
}

// appKey names an organization's app.
type appKey struct{ org, app string }

// outageKey names a push service of an organization's app: its one push
// service (service empty), or, for a Web Push app, one of the push
// services its subscriptions reach (the endpoints' host).
type outageKey struct {
	appKey
	service string
}

// bulkhead is the slots of one organization+app in a lane: its sends in
// flight and, waiting on sem, its queue. A send first takes a slot of its
// bulkhead, then one of the lane, so the sends of an organization+app whose
// push service is slow queue behind each other, never in front of
// another's.
type bulkhead struct {
	sem   chan struct{}
	users int // sends holding or waiting for a slot; dropped at 0
}

// lanes hands out one lane per provider kind.
type lanes struct {
	limits Limits
	def    Limit
	share  int // per organization+app, 0 for Limit.share's default

	mu    sync.Mutex
	lanes map[string]*lane
}

func newLanes(limits Limits, def Limit, share int) *lanes {
	return &lanes{limits: limits, def: def, share: share, lanes: map[string]*lane{}}
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
	lim.Concurrency = max(lim.Concurrency, 1)
	l := &lane{kind: kind, sem: make(chan struct{}, lim.Concurrency), share: lim.share(ls.share), timeout: lim.Timeout, bulkheads: map[appKey]*bulkhead{}}
	ls.lanes[kind] = l
	return l
}

// Errors of acquire and send.
var (
	// errLaneTimeout means the provider's lane timed out before a send
	// could start or finish.
	errLaneTimeout = errors.New("provider did not answer in time")
	// errNoAnswer is an errLaneTimeout after the send had gone to the
	// push service.
	errNoAnswer = fmt.Errorf("%w: the push service did not answer", errLaneTimeout)
	// errShareBusy means the request timed out while its organization+app
	// had its whole share of the lane in flight.
	errShareBusy = errors.New("the organization's app had its whole share of sends in flight")
	// errPaused means the relay paused (stallGuard) between reading the
	// request and its send, which was therefore not made.
	errPaused = errors.New("the relay paused after reading the request; not sent, as a newer count may have gone out since")
)

// acquire waits until ctx ends for a slot of key's bulkhead, then for one
// of the lane, and returns the function that frees both. When key's
// bulkhead has no free slot, it calls queued before it waits (the send
// queues behind the app's own).
func (l *lane) acquire(ctx context.Context, key appKey, queued func()) (release func(), err error) {
	b := l.enter(key)
	select {
	case b.sem <- struct{}{}:
	default:
		queued()
		select {
		case b.sem <- struct{}{}:
		case <-ctx.Done():
			l.leave(key, b)
			return nil, errShareBusy
		}
	}
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		<-b.sem
		l.leave(key, b)
		return nil, errLaneTimeout
	}
	return func() {
		<-l.sem
		<-b.sem
		l.leave(key, b)
	}, nil
}

// enter returns key's bulkhead, creating it, and counts one more user.
func (l *lane) enter(key appKey) *bulkhead {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.bulkheads[key]
	if !ok {
		b = &bulkhead{sem: make(chan struct{}, l.share)}
		l.bulkheads[key] = b
	}
	b.users++
	return b
}

// leave counts one user less of key's bulkhead and drops it when it has
// none, so that bulkheads of past apps do not pile up.
func (l *lane) leave(key appKey, b *bulkhead) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.users--; b.users == 0 {
		delete(l.bulkheads, key)
	}
}
