package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/dispatcher/badges"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Publisher sends batches of notifications to the relay and says whether
// its circuit breaker lets requests through. *relayclient.Client
// implements it. Retries are the delivery path's (internal/delivery).
type Publisher interface {
	// Publish sends batch once to the relay at uri; see
	// relayclient.Client.Publish.
	Publish(ctx context.Context, uri string, batch []relayproto.Notification) (relayproto.Response, error)
	// Healthy reports whether a request made now would be sent.
	Healthy() bool
}

// breakerStater is implemented by publishers that expose their breaker
// state (relayclient.Client does), for the breaker_state gauge.
type breakerStater interface {
	State() relayclient.BreakerState
}

// job is one user's push handed to the sender.
type job struct {
	key   string
	notes []relayproto.Notification
	// answer is where the result goes: its worker's results queue.
	answer *queue[result]
	// abandoned is set when the worker gave its partition up before the
	// push was sent: sending it then could overtake the next owner's push.
	abandoned atomic.Bool
	// epoch is the membership epoch its worker started in (see
	// membership.current): a job of an earlier epoch is never sent.
	epoch uint64
}

// errStalled is a push not sent because its dispatcher was not heard for
// long enough that the others may have taken its partitions: it stopped,
// or was cut off from NATS while the relay stayed reachable.
var errStalled = errors.New("this dispatcher was not heard by the others for a while: its pushes from before are not sent")

// reasonStalled labels pushes and relay requests held for errStalled.
const reasonStalled = "stalled"

// outcome is what became of a push at the relay.
type outcome int

const (
	// outcomeAnswered: the relay accepted the request; the per-device
	// results say the rest.
	outcomeAnswered outcome = iota
	// outcomeRetry: not delivered, try again later (relay down, token
	// refused, shutting down).
	outcomeRetry
	// outcomeDead: the relay refused it for good, or retries ran out while
	// the relay was up.
	outcomeDead
	// outcomeDisabled: the proxy was disabled before it could be sent.
	outcomeDisabled
)

// result is the answer to one job, handed back to its worker.
type result struct {
	key      string
	outcome  outcome
	reason   string
	results  []relayproto.NotificationResult
	err      error
	attempts int
	took     time.Duration
	batchID  string
	// retryAfter is the relay's own back-off request, if any.
	retryAfter time.Duration
}

// sender batches the jobs of every partition into relay requests, at most
// MaxInFlight at once.
type sender struct {
	pub     Publisher
	cfg     Config
	proxy   func() proxyState
	metrics *metrics
	log     zerolog.Logger

	jobs *queue[*job]
	wg   sync.WaitGroup
	// path is the delivery path that applies the relay's answers.
	path deliveryPath
	// lastURI is the relay Uri of the last request: when the proxy
	// setting changes, the relay client's breaker, which learnt about the
	// old relay, is reset.
	lastURI atomic.Pointer[string]
	// view says the dispatcher's membership epoch and whether it hears
	// itself (membership.current); nil: always (0, true).
	view func() (epoch uint64, live bool)
}

// current is the dispatcher's epoch and whether it may send (view).
func (s *sender) current() (uint64, bool) {
	if s.view == nil {
		return 0, true
	}
	return s.view()
}

// goneSince reports whether the dispatcher may have been counted gone
// since epoch: it does not hear itself (current), or a gap began a newer
// epoch.
func (s *sender) goneSince(epoch uint64) bool {
	now, live := s.current()
	return !live || now != epoch
}

// writeGate refuses a write to the relay while the dispatcher may have
// been counted gone (current). The relay client asks it just before a
// request's bytes go out, well after send's checks, which a stop in
// between would leave behind; what is refused is answered as a failed
// request, and send's next check finds the dispatcher stalled.
func (s *sender) writeGate() error {
	if _, live := s.current(); !live {
		return errStalled
	}
	return nil
}

func newSender(pub Publisher, cfg Config, proxy func() proxyState, m *metrics, log zerolog.Logger) *sender {
	return &sender{pub: pub, cfg: cfg, proxy: proxy, metrics: m, log: log, jobs: newQueue[*job]()}
}

// submit queues a job; it never blocks.
func (s *sender) submit(j *job) { s.jobs.Push(j) }

// run sends batches until ctx ends, then answers the jobs still queued
// with a retry so their events stay unacknowledged, and waits for the
// requests in flight.
func (s *sender) run(ctx context.Context) {
	slots := make(chan struct{}, s.cfg.MaxInFlight)
	defer func() {
		s.wg.Wait()
		for _, j := range s.jobs.Take(0) {
			j.answer.Push(result{key: j.key, outcome: outcomeRetry, reason: "shutdown", err: ctx.Err()})
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.jobs.C():
		}
		for s.jobs.Len() > 0 {
			select {
			case <-ctx.Done():
				return
			case slots <- struct{}{}:
			}
			if s.cfg.BatchLinger > 0 && s.countNotifications() < s.cfg.BatchSize {
				t := time.NewTimer(s.cfg.BatchLinger)
				select {
				case <-ctx.Done():
					t.Stop()
					<-slots
					return
				case <-t.C:
				}
			}
			batch := s.takeBatch()
			if len(batch) == 0 {
				<-slots
				continue
			}
			s.wg.Add(1)
			go func() {
				defer func() { <-slots; s.wg.Done() }()
				s.send(ctx, batch)
			}()
		}
	}
}

// countNotifications is how many notifications the queued jobs carry.
func (s *sender) countNotifications() int { return s.jobs.Total(jobSize) }

// takeBatch takes jobs while their notifications fit in BatchSize (at
// least one job).
func (s *sender) takeBatch() []*job { return s.jobs.TakeUpTo(s.cfg.BatchSize, jobSize) }

// jobSize is a job's share of a batch: its notifications.
func jobSize(j *job) int { return len(j.notes) }

// send makes one relay request of batch's jobs and answers each. A job
// its worker abandoned is dropped; one started before the dispatcher's
// last gap in its own heartbeats, or any while it does not hear itself,
// is answered outcomeRetry (errStalled) unsent, before the request and
// before each retry: the partition may have another owner by now, whose
// newer count it could overtake.
func (s *sender) send(ctx context.Context, batch []*job) {
	epoch, live := s.current()
	kept, stalled := batch[:0], false
	for _, j := range batch {
		switch {
		case j.abandoned.Load():
		case !live || j.epoch != epoch:
			stalled = true
			j.answer.Push(result{key: j.key, outcome: outcomeRetry, reason: reasonStalled, err: errStalled})
		default:
			kept = append(kept, j)
		}
	}
	if stalled {
		s.metrics.requests.WithLabelValues(reasonStalled).Inc()
	}
	batch = kept
	if len(batch) == 0 {
		return
	}
	proxy := s.proxy()
	if !proxy.enabled {
		for _, j := range batch {
			j.answer.Push(result{key: j.key, outcome: outcomeDisabled, reason: proxy.reason})
		}
		return
	}
	var notes []relayproto.Notification
	for _, j := range batch {
		notes = append(notes, j.notes...)
	}
	batchID := uuid.NewString()
	start := time.Now()
	// The Uri is read before every attempt, so a changed proxy setting
	// reaches the request in flight; back-pressure (429, an open breaker)
	// returns at once, for the worker to hold the push without using its
	// retry budget and to push the latest count when the relay is back.
	uris := func(context.Context) (string, error) {
		if s.goneSince(epoch) {
			return "", errStalled
		}
		p := s.proxy()
		if !p.enabled {
			return "", fmt.Errorf("%w: %s", delivery.ErrProxyDisabled, p.reason)
		}
		if old := s.lastURI.Swap(&p.uri); old != nil && *old != p.uri {
			if r, ok := s.pub.(interface{ ResetBreaker() }); ok {
				r.ResetBreaker()
				s.log.Info().Str("uri", p.uri).Msg("the relay's Uri changed: the relay client's breaker is reset")
			}
		}
		return p.uri, nil
	}
	pol := s.cfg.Retry
	pol.ReturnOnBackPressure = true
	resp, attempts, err := delivery.Publish(ctx, s.pub, uris, notes, pol, func(attempt int, err error, wait time.Duration) {
		s.metrics.retries.Inc()
		s.log.Debug().Err(err).Int("attempt", attempt).Dur("wait", wait).Int("notifications", len(notes)).Msg("relay request failed; retrying")
	})
	took := time.Since(start)
	if err != nil && s.goneSince(epoch) {
		// The dispatcher stopped meanwhile (the write gate may have
		// failed the request): the push is held, not failed.
		err = fmt.Errorf("%w: %w", errStalled, err)
	}
	if errors.Is(err, delivery.ErrProxyDisabled) {
		for _, j := range batch {
			j.answer.Push(result{key: j.key, outcome: outcomeDisabled, reason: proxy.reason})
		}
		return
	}
	out, reason := s.classify(ctx, err)
	s.metrics.requests.WithLabelValues(requestLabel(out, reason)).Inc()
	if err != nil {
		ev := s.log.Warn()
		if out == outcomeDead {
			ev = s.log.Error()
		}
		ev.Err(err).Int("attempts", attempts).Int("notifications", len(notes)).Str("outcome", reason).Msg("relay request failed")
	}
	var retryAfter time.Duration
	var rerr *relayclient.Error
	if errors.As(err, &rerr) {
		retryAfter = rerr.RetryAfter
	}
	if hint, ok := delivery.BackPressure(err); ok {
		retryAfter = hint
	}
	byID := make(map[string]relayproto.NotificationResult, len(resp.Results))
	for _, r := range resp.Results {
		byID[r.ID] = r
	}
	for _, j := range batch {
		r := result{key: j.key, outcome: out, reason: reason, err: err, attempts: attempts, took: took, batchID: batchID, retryAfter: retryAfter}
		if out == outcomeAnswered {
			for _, n := range j.notes {
				if nr, ok := byID[n.ID]; ok {
					r.results = append(r.results, nr)
				}
			}
		}
		j.answer.Push(r)
	}
}

// classify decides what a failed request means for its pushes: hold them
// while the relay is down (its breaker open) or asks us to slow down (429),
// while it refuses our token (an operator must fix the certificate;
// dead-lettering every badge meanwhile would help nobody) and while
// shutting down; dead-letter them when the relay refused them for good or
// the retry budget ran out while it was up.
func (s *sender) classify(ctx context.Context, err error) (outcome, string) {
	_, backPressure := delivery.BackPressure(err)
	switch {
	case err == nil:
		return outcomeAnswered, ""
	case ctx.Err() != nil:
		return outcomeRetry, "shutdown"
	case errors.Is(err, errStalled):
		return outcomeRetry, reasonStalled
	case backPressure && !errors.Is(err, relayclient.ErrCircuitOpen):
		return outcomeRetry, badges.RetryRelayBackPressure
	case errors.Is(err, relayclient.ErrCircuitOpen) || !s.pub.Healthy():
		return outcomeRetry, badges.RetryRelayUnavailable
	case errors.Is(err, relayclient.ErrUnauthorized):
		return outcomeRetry, "unauthorized"
	case errors.Is(err, relayclient.ErrPermanent):
		return outcomeDead, ReasonPermanent
	default:
		return outcomeDead, ReasonExhausted
	}
}

func requestLabel(out outcome, reason string) string {
	switch out {
	case outcomeAnswered:
		return "ok"
	case outcomeRetry:
		return reason
	}
	return "failed"
}
