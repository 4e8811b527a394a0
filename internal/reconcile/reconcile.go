package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// Defaults of Config.
const (
	DefaultEstimatedDelay = 2 * time.Minute
	DefaultSweepPeriod    = 24 * time.Hour
	DefaultRate           = 20
	DefaultRetryDelay     = 10 * time.Second
	DefaultFollowUp       = time.Hour
	DefaultMaxQueued      = 1_000_000
	// MaxBatch is the most users one check reads at once (Graph's $batch
	// limit).
	MaxBatch = 20
	// maxTries bounds the checks of a user that keep ending Behind or
	// Raced; the sweep checks it again later.
	maxTries = 6
)

// DefaultOneWaySources are the sources that report new mail and never
// reads: Dovecot's OX driver.
var DefaultOneWaySources = []events.Source{events.SourceDovecotOX}

// DefaultOpaqueSources are the sources whose flag changes do not say what
// changed: a Graph "updated" notification may be a read or an unread, so
// the count it leaves is checked like an estimate.
var DefaultOpaqueSources = []events.Source{events.SourceGraph}

// User names one user of a tenant.
type User struct {
	Tenant string `json:"tenant"`
	User   string `json:"user"`
}

// Outcome is what a check of one user found and did.
type Outcome string

// The outcomes of a check.
const (
	// Match: the badge showed the truth.
	Match Outcome = "match"
	// Confirmed: the estimated count was the truth; a snapshot made it exact.
	Confirmed Outcome = "confirmed"
	// Corrected: the badge was wrong; a snapshot set the truth.
	Corrected Outcome = "corrected"
	// Behind: the dispatcher has not applied the user's last event yet.
	Behind Outcome = "behind"
	// Raced: an event of the user arrived while the truth was read, so the
	// snapshot was refused.
	Raced Outcome = "raced"
	// NotServed: no counter knows the user.
	NotServed Outcome = "not_served"
	// Skipped: the user is the monitor's canary, whose count only the
	// canary sets (its last event came from the canary).
	Skipped Outcome = "skipped"
	// Failed: the state, the truth or the publish could not be read or done.
	Failed Outcome = "error"
)

// Result is the check of one user.
type Result struct {
	User
	Outcome Outcome `json:"outcome"`
	// Counter names the counter that read the truth.
	Counter string `json:"counter,omitempty"`
	// Badge is the count the state held, Exact whether it was exact.
	Badge int  `json:"badge"`
	Exact bool `json:"exact"`
	// Truth is the count the mail system gave.
	Truth int `json:"truth"`
	// LastSource is the source of the user's last event before the check.
	LastSource events.Source `json:"last_source,omitempty"`
	// Seq is the stream sequence of the snapshot published, if any.
	Seq uint64 `json:"seq,omitempty"`
	// Error says why the check failed.
	Error string `json:"error,omitempty"`
}

// Trigger says why a user is checked, as a metric label.
type Trigger string

// The triggers of a check.
const (
	TriggerEstimated Trigger = "estimated"
	TriggerSweep     Trigger = "sweep"
	TriggerRequest   Trigger = "request"
)

// Config is what a Reconciler needs.
type Config struct {
	// NC is the NATS connection (on-demand checks) and JS its JetStream.
	NC *nats.Conn
	JS jetstream.JetStream
	// Keyer names the users' subjects and keys.
	Keyer *events.Keyer
	// Counters read the truth, tried in order: a counter answering
	// sources.ErrNotServed passes the user to the next.
	Counters []sources.Counter
	// Mailbox is the counted mailbox (the dispatcher's --mailbox);
	// events.Inbox when empty.
	Mailbox string
	// EstimatedDelay is how soon after an event without a count its user
	// is checked (DefaultEstimatedDelay when 0; negative: never).
	EstimatedDelay time.Duration
	// SweepPeriod is how long one pass over every user with a
	// subscription takes (DefaultSweepPeriod when 0; negative: no sweep).
	SweepPeriod time.Duration
	// Rate is the most checks per second per counter (DefaultRate when 0).
	Rate float64
	// OneWaySources report new mail and never reads (Dovecot's OX
	// driver): after their events the user is checked every
	// EstimatedDelay, while unread mail is left, for FollowUp.
	// DefaultOneWaySources when nil.
	OneWaySources []events.Source
	// OpaqueSources report changes without saying what changed (Graph's
	// "updated"): their flag events on Mailbox are checked like events
	// without a count. DefaultOpaqueSources when nil.
	OpaqueSources []events.Source
	// FollowUp is how long after an event of a one-way source its user is
	// followed up (DefaultFollowUp when 0; negative: never).
	FollowUp time.Duration
	// RetryDelay is the wait before a Behind or Raced user is checked again.
	RetryDelay time.Duration
	// MaxQueued bounds the users waiting for an estimated check.
	MaxQueued int
	// HTTPAddr is where Run serves /healthz, /readyz and /metrics (none
	// when empty).
	HTTPAddr string
	Log      zerolog.Logger
	Metrics  prometheus.Registerer
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Reconciler checks users' badges against their mail system.
type Reconciler struct {
	cfg      Config
	stream   jetstream.Stream
	state    *unread.Store
	limiters []*rate.Limiter
	m        *metrics

	mu    sync.Mutex
	queue *queue
	wake  chan struct{}
	// tenants, sweepUsers and lastSweep are what Status reports.
	tenants    map[string]*TenantStatus
	sweepUsers int
	lastSweep  time.Time
}

// New returns a reconciler; the MAIL stream and the unread bucket must exist.
func New(ctx context.Context, cfg Config) (*Reconciler, error) {
	if len(cfg.Counters) == 0 {
		return nil, errors.New("reconcile: no counter configured (doveadm, IMAP, Graph or EWS)")
	}
	if cfg.Mailbox == "" {
		cfg.Mailbox = events.Inbox
	}
	if cfg.EstimatedDelay == 0 {
		cfg.EstimatedDelay = DefaultEstimatedDelay
	}
	if cfg.SweepPeriod == 0 {
		cfg.SweepPeriod = DefaultSweepPeriod
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.OneWaySources == nil {
		cfg.OneWaySources = DefaultOneWaySources
	}
	if cfg.OpaqueSources == nil {
		cfg.OpaqueSources = DefaultOpaqueSources
	}
	if cfg.FollowUp == 0 {
		cfg.FollowUp = DefaultFollowUp
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = DefaultRetryDelay
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	stream, err := cfg.JS.Stream(ctx, broker.StreamMail)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", broker.StreamMail, err)
	}
	state, err := unread.Open(ctx, cfg.JS)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{cfg: cfg, stream: stream, state: state, m: m, queue: newQueue(cfg.MaxQueued), wake: make(chan struct{}, 1), tenants: map[string]*TenantStatus{}}
	for range cfg.Counters {
		r.limiters = append(r.limiters, rate.NewLimiter(rate.Limit(cfg.Rate), max(MaxBatch, int(cfg.Rate))))
	}
	return r, nil
}

// pending is one user during a check.
type pending struct {
	i       int // index in the results
	key     string
	lastSeq uint64 // the user's last stored event when the check began
	state   unread.State
}

// Check checks each user (at most MaxBatch) and corrects the wrong badges.
// It returns one Result per user, in order.
func (r *Reconciler) Check(ctx context.Context, trigger Trigger, users []User) []Result {
	results := make([]Result, len(users))
	keys := make([]string, len(users))
	for i, u := range users {
		results[i].User = u
		keys[i] = r.cfg.Keyer.UserKey(u.Tenant, u.User)
	}
	var ready []pending
	for i, u := range users {
		// The last sequence is read before the state: a state that has
		// applied it is at least as new as the stream was then.
		seq, source, err := r.lastEvent(ctx, u)
		if err != nil {
			results[i].fail(err)
			continue
		}
		results[i].LastSource = source
		if source == events.SourceCanary {
			results[i].Outcome = Skipped
			continue
		}
		ready = append(ready, pending{i: i, key: keys[i], lastSeq: seq})
	}
	ready = r.loadStates(ctx, ready, results)
	ready = r.readTruth(ctx, ready, results)
	for _, p := range ready {
		r.settle(ctx, p, &results[p.i])
	}
	now := r.cfg.Now()
	for _, res := range results {
		r.m.observe(trigger, res)
		r.tally(res, now)
		if res.Outcome == Failed {
			r.cfg.Log.Warn().Str("tenant", res.Tenant).Str("user", res.User.User).Str("counter", res.Counter).Str("error", res.Error).Msg("reconciliation failed")
		} else if res.Outcome == Corrected {
			r.cfg.Log.Info().Str("tenant", res.Tenant).Str("user", res.User.User).Str("counter", res.Counter).
				Int("badge", res.Badge).Int("truth", res.Truth).Str("trigger", string(trigger)).Msg("badge corrected")
		}
	}
	return results
}

func (res *Result) fail(err error) {
	res.Outcome = Failed
	res.Error = err.Error()
}

// lastEvent returns the stream sequence of the user's last stored event
// and its source; 0 and "" when the stream holds none.
func (r *Reconciler) lastEvent(ctx context.Context, u User) (uint64, events.Source, error) {
	msg, err := r.stream.GetLastMsgForSubject(ctx, r.cfg.Keyer.StoredSubjectFilter(u.Tenant, u.User))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("reading the last event of %s: %w", u.User, err)
	}
	var source events.Source
	if e, err := events.Decode(msg.Data); err == nil {
		source = e.Source
	}
	return msg.Sequence, source, nil
}

// loadStates reads the users' states and keeps those whose state has
// applied their last event.
func (r *Reconciler) loadStates(ctx context.Context, ps []pending, results []Result) []pending {
	if len(ps) == 0 {
		return nil
	}
	keys := make([]string, len(ps))
	for i, p := range ps {
		keys[i] = p.key
	}
	loaded, err := r.state.GetMany(ctx, keys)
	if err != nil {
		for _, p := range ps {
			results[p.i].fail(err)
		}
		return nil
	}
	out := ps[:0]
	for i, p := range ps {
		p.state = loaded[i].State
		res := &results[p.i]
		res.Badge, res.Exact = p.state.Count, p.state.Exact
		if p.state.LastSeq < p.lastSeq {
			res.Outcome = Behind
			continue
		}
		out = append(out, p)
	}
	return out
}

// readTruth asks the counters, in order, for the users' counts, and keeps
// the users whose count was read.
func (r *Reconciler) readTruth(ctx context.Context, ps []pending, results []Result) []pending {
	var read []pending
	for ci, c := range r.cfg.Counters {
		if len(ps) == 0 {
			break
		}
		if err := r.limiters[ci].WaitN(ctx, len(ps)); err != nil {
			for _, p := range ps {
				results[p.i].fail(fmt.Errorf("waiting for the %s rate limit: %w", c.Name(), err))
			}
			return read
		}
		boxes := make([]sources.Mailbox, len(ps))
		for i, p := range ps {
			boxes[i] = sources.Mailbox{Tenant: results[p.i].Tenant, User: results[p.i].User.User, Name: r.cfg.Mailbox}
		}
		counts := c.Counts(ctx, boxes)
		var next []pending
		for i, p := range ps {
			res := &results[p.i]
			switch {
			case i >= len(counts):
				res.Counter = c.Name()
				res.fail(fmt.Errorf("counter %s gave %d counts for %d mailboxes", c.Name(), len(counts), len(boxes)))
			case errors.Is(counts[i].Err, sources.ErrNotServed):
				next = append(next, p)
			case counts[i].Err != nil:
				res.Counter = c.Name()
				res.fail(counts[i].Err)
			default:
				res.Counter, res.Truth = c.Name(), counts[i].Unread
				read = append(read, p)
			}
		}
		ps = next
	}
	for _, p := range ps {
		results[p.i].Outcome = NotServed
	}
	return read
}

// settle compares the truth with the state and publishes a snapshot when
// they differ or the state is an estimate.
func (r *Reconciler) settle(ctx context.Context, p pending, res *Result) {
	if res.Truth == p.state.Count && p.state.Exact {
		res.Outcome = Match
		return
	}
	now := r.cfg.Now().UTC()
	e := events.Event{
		Version: events.SchemaVersion, Tenant: res.Tenant, User: res.User.User, Mailbox: r.cfg.Mailbox,
		Kind: events.KindSnapshot, Unread: events.IntPtr(res.Truth), Count: 1,
		ChangeID:   "reconcile:" + strconv.FormatUint(p.lastSeq, 10) + ":" + strconv.Itoa(res.Truth),
		OccurredAt: now, ReceivedAt: now, Source: events.SourceReconcile,
	}
	data, err := e.Encode()
	if err != nil {
		res.fail(fmt.Errorf("encoding the snapshot: %w", err))
		return
	}
	msg := &nats.Msg{Subject: r.cfg.Keyer.Subject(e.Tenant, e.User), Data: data}
	ack, err := r.cfg.JS.PublishMsg(ctx, msg,
		jetstream.WithMsgID(r.cfg.Keyer.MsgID(&e)),
		// The server checks the subject the stream stores the event
		// under (after its partition transform): exactly the user's,
		// including events proposed and not yet stored in a cluster.
		jetstream.WithExpectLastSequencePerSubject(p.lastSeq))
	switch {
	case wrongLastSequence(err):
		res.Outcome = Raced
		return
	case err != nil:
		res.fail(fmt.Errorf("publishing the snapshot: %w", err))
		return
	}
	res.Seq = ack.Sequence
	if res.Truth == p.state.Count {
		res.Outcome = Confirmed
	} else {
		res.Outcome = Corrected
	}
}

// wrongLastSequence reports whether err is JetStream refusing a publish
// whose expected last subject sequence is not the stream's.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
