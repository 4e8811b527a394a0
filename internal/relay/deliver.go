package relay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// noProvider is the provider label of deliveries that reached no provider
// (unknown or unavailable app).
const noProvider = "none"

// job is one send: a badge for one recipient, and where its result goes.
type job struct {
	recipient relayproto.Recipient
	badge     providers.Badge
	provider  providers.Provider
	result    *relayproto.DeviceResult
	// service is the push service the badge goes to, when the provider
	// reaches more than one (providers.Multiplexer: a Web Push endpoint's
	// host); "" when it is the app's one push service.
	service string
	// read is the stall guard's mark when the request was read: the send
	// is not made if the relay paused since (stallGuard.pausedSince).
	read int64
}

// outage names the push service whose outages hold the job (outages).
func (j *job) outage() outageKey {
	return outageKey{appKey: appKey{org: j.badge.Tenant, app: j.badge.AppID}, service: j.service}
}

// deliver answers every notification of req for tenant: monitoring ones at
// once, the others through their apps' providers, one lane per provider
// kind, all lanes at the same time; within a lane each organization+app
// has its own bulkhead (see lane.acquire). read is the stall guard's mark
// when req was read. It returns the response and how many devices got
// each status.
func (s *Server) deliver(ctx context.Context, tenant string, req *relayproto.Request, read int64, log zerolog.Logger) (relayproto.Response, map[relayproto.DeviceStatus]int) {
	resp := relayproto.Response{Results: make([]relayproto.NotificationResult, len(req.Notifications))}
	byKind := map[string][]job{}
	for i, n := range req.Notifications {
		devices := make([]relayproto.DeviceResult, len(n.Recipients))
		resp.Results[i] = relayproto.NotificationResult{ID: n.ID, Devices: devices}
		monitoring := n.IsMonitoring()
		kind := "push"
		if monitoring {
			kind = "monitoring"
		}
		s.metrics.notifications.WithLabelValues(kind).Inc()
		for j, r := range n.Recipients {
			d := &devices[j]
			d.AppID, d.DeviceID = r.AppID, r.DeviceID
			if monitoring {
				// The connectivity probe: answered here, never forwarded.
				d.Status = relayproto.DeviceDelivered
				continue
			}
			p, err := s.router.Route(tenant, r.AppID)
			if err != nil {
				s.unroutable(tenant, d, err)
				s.metrics.delivery(noProvider, d.Status)
				continue
			}
			j := job{
				recipient: r,
				provider:  p,
				result:    d,
				read:      read,
				badge: providers.Badge{
					Tenant:         tenant,
					AppID:          r.AppID,
					Device:         r.DeviceID,
					Count:          n.Payload.UnseenEmailCount,
					BackgroundSync: backgroundSync(n.Payload.BackgroundSyncType),
					Language:       n.Payload.Language,
					ID:             n.ID,
				},
			}
			if m, ok := p.(providers.Multiplexer); ok {
				j.service, _ = m.Service(j.badge)
			}
			byKind[p.Name()] = append(byKind[p.Name()], j)
		}
	}

	var wg sync.WaitGroup
	for kind, jobs := range byKind {
		wg.Go(func() { s.runLane(ctx, s.lanes.get(kind), tenant, jobs, log) })
	}
	wg.Wait()

	tally := map[relayproto.DeviceStatus]int{}
	for _, res := range resp.Results {
		for _, d := range res.Devices {
			tally[d.Status]++
		}
	}
	return resp, tally
}

// backgroundSync reports whether a backgroundSyncType asks the app to sync.
func backgroundSync(t string) bool {
	return t != "" && !strings.EqualFold(t, "None")
}

// unroutable fills the result of a recipient whose app has no provider
// for tenant: an app fault (unknown app, app not bound to the
// organization, provider not set up), never forwarded.
func (s *Server) unroutable(tenant string, d *relayproto.DeviceResult, err error) {
	d.SetClass(relayproto.ClassAppFault)
	label := d.AppID
	switch {
	case errors.Is(err, ErrUnknownApp):
		d.Reason = fmt.Sprintf("appId %q is not registered at this relay", d.AppID)
		label = "unknown" // any string may come here: keep the label set bounded
	case errors.Is(err, registry.ErrNotBound):
		d.Reason = err.Error()
	default:
		d.Reason = fmt.Sprintf("appId %q cannot be served by this relay: its push service is not set up (see the relay's log)", d.AppID)
	}
	s.metrics.appFault(tenant, label, noProvider)
}

// runLane sends jobs through one provider kind's lane: as many at once as
// the lane has slots, all within the lane's timeout. Jobs that cannot start
// or finish in time are answered "retry".
func (s *Server) runLane(ctx context.Context, l *lane, tenant string, jobs []job, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	work := make(chan *job)
	var wg sync.WaitGroup
	for range min(len(jobs), cap(l.sem)) {
		wg.Go(func() {
			for j := range work {
				s.settle(l, tenant, j, s.send(ctx, l, j), log)
			}
		})
	}
	for i := range jobs {
		work <- &jobs[i]
	}
	close(work)
	wg.Wait()
}

// send takes a slot of the job's organization+app and one of the lane, and
// sends one badge (unless its push service is down: outages.pass, or the
// relay paused since the request was read: errPaused), giving up when ctx
// ends even if the provider does not: the slots stay taken until the
// provider returns, so a stuck push service uses up only its
// organization+app's share of the lane.
func (s *Server) send(ctx context.Context, l *lane, j *job) error {
	key := j.outage()
	if err := s.outages.pass(key, s.now()); err != nil {
		return err
	}
	release, err := l.acquire(ctx, key.appKey, func() {
		s.metrics.shareWaits.WithLabelValues(j.badge.Tenant, j.badge.AppID, l.kind).Inc()
	})
	if err != nil {
		return err
	}
	if s.stall.pausedSince(j.read) {
		// Asked last, just before the send: the request may have waited
		// in the relay through a pause, long enough for its sender to give
		// up on it and send a newer count through another replica.
		release()
		return errPaused
	}
	inFlight := s.metrics.inFlight.WithLabelValues(l.kind)
	inFlight.Inc()
	done := make(chan error, 1)
	go func() {
		defer release()
		defer inFlight.Dec()
		start := time.Now()
		err := j.provider.Send(ctx, j.badge)
		// The exemplar names the device, by the reference every part logs.
		observe(s.metrics.providerLatency.WithLabelValues(l.kind), time.Since(start).Seconds(), prometheus.Labels{"device": j.badge.Ref()})
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done:
			return err
		default:
			return errNoAnswer
		}
	}
}

// settle records the outcome of a send in the job's result, as a fault
// class: the provider's answer table gave the class; a device-gone verdict
// older than the subscription is not taken as gone.
func (s *Server) settle(l *lane, tenant string, j *job, err error, log zerolog.Logger) {
	d := j.result
	var perr *providers.Error
	key := j.outage()
	timedOut := errors.Is(err, errLaneTimeout) || errors.Is(err, context.DeadlineExceeded)
	shareBusy := errors.Is(err, errShareBusy)
	var held *heldByOutage
	isHeld := errors.As(err, &held)
	paused := errors.Is(err, errPaused)
	// outageBackOff is the back-off of the push service's outage, when
	// this send failed with the service as a whole. A send held by the
	// outage, or by a pause of the relay, was not sent: it neither fails
	// nor answers. Nor does one that failed across a pause of the relay:
	// it timed out, or its connection did, while the relay did not run.
	var outageBackOff time.Duration
	switch {
	case isHeld || paused || (err != nil && s.stall.pausedSince(j.read)):
	case failedAsAWhole(key, err, timedOut, shareBusy):
		var began bool
		if outageBackOff, began = s.outages.failed(key, s.now()); began {
			outageLog(log.Warn(), l, key).Str("failure", failureOf(l, err, timedOut, shareBusy)).
				Msg("the push service of this organization's app is failing: one send a second goes through until it answers, the others are answered retry")
		}
	case timedOut || shareBusy:
		// Never reached its push service (queued behind the app's sends
		// to another): it tells nothing of it.
	default:
		if lasted, ended := s.outages.answered(key, s.now()); ended {
			outageLog(log.Info(), l, key).Dur("down_for", lasted).
				Msg("the push service of this organization's app answers again")
		}
	}
	switch {
	case err == nil:
		d.SetClass(relayproto.ClassDelivered)
	case isHeld:
		d.SetClass(relayproto.ClassTransient)
		d.Reason = fmt.Sprintf("%s: not sent: %v", l.kind, held)
		d.BackOffTimeInMilliseconds = backOffMillis(held.backOff)
		s.metrics.outageHeld.WithLabelValues(tenant, j.badge.AppID, l.kind).Inc()
	case paused:
		d.SetClass(relayproto.ClassTransient)
		d.Reason = fmt.Sprintf("%s: %v", l.kind, err)
		d.BackOffTimeInMilliseconds = backOffMillis(pausedBackOff)
	case shareBusy:
		d.SetClass(relayproto.ClassTransient)
		d.Reason = fmt.Sprintf("%s: this organization's app had all its %d sends in flight for %s (its push service is slow)", l.kind, l.share, l.timeout)
		d.BackOffTimeInMilliseconds = backOffMillis(outageBackOff)
	case timedOut:
		d.SetClass(relayproto.ClassTransient)
		d.Reason = fmt.Sprintf("%s did not answer within %s", l.kind, l.timeout)
		d.BackOffTimeInMilliseconds = backOffMillis(outageBackOff)
	case providers.IsGone(err):
		d.SetClass(relayproto.ClassDeviceGone)
		d.Reason = reason(l.kind, err)
		if errors.As(err, &perr) && !perr.GoneSince.IsZero() {
			d.VerdictAt = perr.GoneSince.UTC()
			if j.recipient.LastSubscriptionUpdate.After(perr.GoneSince) {
				// The device registered again after the push service saw
				// its address go: the subscription is newer than the
				// verdict, so it is not gone; the push may work later.
				// Reported transient with its verdict time and no
				// back-off: the dispatcher keeps the subscription and does
				// not send this badge again.
				d.SetClass(relayproto.ClassTransient)
				d.Reason += " (the subscription was refreshed after the device was unregistered; not treated as gone)"
			}
		}
	case providers.IsRetryable(err):
		d.SetClass(relayproto.ClassTransient)
		d.Reason = reason(l.kind, err)
		wait, ok := providers.RetryAfter(err)
		switch {
		case ok:
		case outageBackOff > 0:
			wait = outageBackOff
		default:
			wait = s.cfg.RetryBackOff
		}
		d.BackOffTimeInMilliseconds = backOffMillis(wait)
	default:
		// Provider authentication, credentials, configuration, and
		// anything unclassified: the app, not the device.
		d.SetClass(relayproto.ClassAppFault)
		d.Reason = reason(l.kind, err)
		s.metrics.appFault(tenant, j.badge.AppID, l.kind)
	}
	s.metrics.delivery(l.kind, d.Status)
	if d.Status != relayproto.DeviceDelivered {
		log.Debug().
			Str("provider", l.kind).
			Str("app_id", j.badge.AppID).
			Str("device", j.badge.Ref()).
			Str("class", string(d.Class)).
			Str("reason", d.Reason).
			Msg("device not delivered")
	}
	var isProviderError *providers.Error
	if err != nil && !errors.As(err, &isProviderError) && !errors.Is(err, errLaneTimeout) && !errors.Is(err, errShareBusy) && !isHeld && !paused {
		// The error text may quote a device address: only its type is
		// logged above debug level.
		log.Warn().Str("provider", l.kind).Str("app_id", j.badge.AppID).Str("error_type", fmt.Sprintf("%T", err)).Msg("provider failed with an unclassified error")
		log.Debug().Str("provider", l.kind).Err(err).Msg("unclassified provider error")
	}
}

// failedAsAWhole reports whether a send's error says that the push
// service of key failed as a whole. For an app with one push service, so
// does a send that waited the whole timeout for a slot of the app's share
// or of the lane: the app's sends before it are stuck there. A Web Push
// app's sends reach as many push services as its subscriptions' browsers
// use; one queued behind the app's sends to another never reached its
// own, and only what its own push service did counts.
func failedAsAWhole(key outageKey, err error, timedOut, shareBusy bool) bool {
	if serviceDown(err) || errors.Is(err, errNoAnswer) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return key.service == "" && (timedOut || shareBusy)
}

// outageLog adds to a log line of an outage its push service: the
// provider, the app and, for a Web Push app, the push service's host.
func outageLog(ev *zerolog.Event, l *lane, key outageKey) *zerolog.Event {
	ev = ev.Str("provider", l.kind).Str("app_id", key.app)
	if key.service != "" {
		ev = ev.Str("push_service", key.service)
	}
	return ev
}

// failureOf names how a send failed with the push service as a whole
// (settle has told a timeout and a full share from err), for the log:
// never a device address.
func failureOf(l *lane, err error, timedOut, shareBusy bool) string {
	switch {
	case shareBusy:
		return "its share of sends in flight all along the timeout"
	case timedOut:
		return "no answer within " + l.timeout.String()
	}
	return reason(l.kind, err)
}

// reason describes a provider failure for the dispatcher: the push
// service's status and reason code, never the underlying error, which may
// quote a device address or a push endpoint.
func reason(kind string, err error) string {
	var perr *providers.Error
	if !errors.As(err, &perr) {
		return kind + ": delivery failed"
	}
	var b strings.Builder
	b.WriteString(kind)
	b.WriteString(":")
	if perr.Status != 0 {
		b.WriteString(" ")
		b.WriteString(strconv.Itoa(perr.Status))
	}
	if perr.Reason != "" {
		b.WriteString(" ")
		b.WriteString(perr.Reason)
	}
	if perr.Status == 0 && perr.Reason == "" {
		b.WriteString(" delivery failed")
	}
	return b.String()
}

// observe records v on o with exemplar labels when o keeps exemplars.
func observe(o prometheus.Observer, v float64, exemplar prometheus.Labels) {
	if eo, ok := o.(prometheus.ExemplarObserver); ok {
		eo.ObserveWithExemplar(v, exemplar)
		return
	}
	o.Observe(v)
}
