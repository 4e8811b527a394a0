package delivery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// Subscriptions is the subscription store the delivery path changes;
// *subscriptions.Store implements it.
type Subscriptions interface {
	// Get returns the stored subscription under key, or an error matching
	// subscriptions.ErrNotFound.
	Get(ctx context.Context, key string) (subscriptions.Subscription, error)
	// DeleteKey removes the subscription under key.
	DeleteKey(ctx context.Context, key string) error
	// Put stores a subscription (a restore).
	Put(ctx context.Context, sub subscriptions.Subscription) (subscriptions.Subscription, bool, error)
}

// Origins of a push, for records and metrics.
const (
	OriginDispatcher = "dispatcher"
	OriginRedrive    = "redrive"
	OriginReplay     = "replay"
	OriginProbe      = "probe"
)

// Config is what a Deliverer works with.
type Config struct {
	// JS is the deployment's JetStream (PUSH_SENT, PUSH_DEAD). Required.
	JS jetstream.JetStream
	// Relay sends the batches. Required for Send.
	Relay Publisher
	// URI gives the relay's Uri before every attempt. Required for Send.
	URI URISource
	// Subscriptions and Tombstones are changed by device-gone verdicts;
	// without them no subscription is removed.
	Subscriptions Subscriptions
	Tombstones    *pushlog.Tombstones
	// Breakers are the tenant+app breakers; default a set of its own.
	Breakers *Breakers
	// Policy is the retry policy of Send.
	Policy Policy
	// Origin names the caller in records and metrics (Origin*).
	Origin string
	// Metrics, when set, are updated.
	Metrics *Metrics
	// Log receives what operators must know (removals, pauses).
	Log zerolog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Deliverer applies the relay's answers: the one place where pushes are
// recorded, subscriptions removed (with tombstones) and restored, and
// dead letters written. It is safe for concurrent use.
type Deliverer struct {
	cfg Config
}

// New returns a Deliverer.
func New(cfg Config) *Deliverer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Origin == "" {
		cfg.Origin = OriginDispatcher
	}
	if cfg.Breakers == nil {
		cfg.Breakers = NewBreakers(BreakerConfig{})
	}
	return &Deliverer{cfg: cfg}
}

// Breakers are the deliverer's tenant+app breakers.
func (d *Deliverer) Breakers() *Breakers { return d.cfg.Breakers }

// OnBreakerChange is the BreakerConfig.OnChange that logs a pause (naming
// the tenant and app) and its end, and sets the app_paused gauge.
func OnBreakerChange(log zerolog.Logger, m *Metrics) func(tenant, appID string, open bool, reason string) {
	return func(tenant, appID string, open bool, reason string) {
		if m != nil {
			v := 0.0
			if open {
				v = 1
			}
			m.appPaused.WithLabelValues(tenant, appID).Set(v)
		}
		if open {
			log.Error().Str("tenant", tenant).Str("app_id", appID).Str("reason", reason).
				Msg("app fault: sending for this tenant and app is paused, every subscription kept; fix the app's credentials or registration at the relay, it resumes when a trial push succeeds")
			return
		}
		log.Info().Str("tenant", tenant).Str("app_id", appID).Msg("app works again: sending for this tenant and app resumed")
	}
}

// Settle applies an answer: removes the subscriptions of gone devices
// (tombstone first), keeps those of stale verdicts, and tells the
// tenant+app breakers which apps delivered and which faulted. It returns
// the keys of the subscriptions it removed. Removal failures are logged:
// the next push's answer removes them.
func (d *Deliverer) Settle(ctx context.Context, p Push, a Answer) (removed []string) {
	for app := range a.Delivered {
		d.cfg.Breakers.Delivered(p.Tenant, app)
	}
	faulted := map[string]string{}
	for _, dev := range a.AppFaults {
		faulted[dev.Recipient.AppID] = dev.Reason
	}
	for app, reason := range faulted {
		if d.cfg.Metrics != nil {
			d.cfg.Metrics.appFaults.WithLabelValues(p.Tenant, app).Inc()
		}
		if a.Delivered[app] == 0 {
			d.cfg.Breakers.Fault(p.Tenant, app, reason)
		}
	}
	for _, dev := range a.Kept {
		if d.cfg.Metrics != nil {
			d.cfg.Metrics.kept.Inc()
		}
		d.cfg.Log.Info().Str("tenant", p.Tenant).Str("device", subscriptions.DeviceRef(dev.Recipient.AppID, dev.Recipient.DeviceID)).
			Time("verdict_at", dev.VerdictAt).Time("subscription_updated", dev.Recipient.LastSubscriptionUpdate).
			Msg("device-gone verdict older than the subscription: subscription kept")
	}
	for _, dev := range a.Gone {
		ok, err := d.Remove(ctx, p, dev)
		if err != nil {
			d.cfg.Log.Warn().Err(err).Str("device", subscriptions.DeviceRef(dev.Recipient.AppID, dev.Recipient.DeviceID)).Msg("removing a gone device's subscription")
		}
		if ok {
			removed = append(removed, subscriptions.Key(p.UserKey, dev.Recipient.AppID, dev.Recipient.DeviceID))
		}
	}
	return removed
}

// Remove removes the subscription of a gone device, after storing its
// tombstone, and reports whether it did; without a tombstone store nothing
// is removed, so that no verdict is beyond undoing.
func (d *Deliverer) Remove(ctx context.Context, p Push, dev Device) (bool, error) {
	if d.cfg.Subscriptions == nil || d.cfg.Tombstones == nil || p.UserKey == "" {
		return false, nil
	}
	key := subscriptions.Key(p.UserKey, dev.Recipient.AppID, dev.Recipient.DeviceID)
	sub, err := d.cfg.Subscriptions.Get(ctx, key)
	if errors.Is(err, subscriptions.ErrNotFound) {
		return true, nil // already gone
	}
	if err != nil {
		return false, fmt.Errorf("reading the subscription before removing it: %w", err)
	}
	if sub.LastSubscriptionUpdate.After(dev.Recipient.LastSubscriptionUpdate) {
		return false, nil // refreshed since the push was sent: the verdict is about an older registration
	}
	t := pushlog.Tombstone{Subscription: sub, Reason: dev.Reason, VerdictAt: dev.VerdictAt, RemovedAt: d.cfg.Now().UTC(), By: d.cfg.Origin}
	if err := d.cfg.Tombstones.Put(ctx, t); err != nil {
		return false, err
	}
	if err := d.cfg.Subscriptions.DeleteKey(ctx, key); err != nil && !errors.Is(err, subscriptions.ErrNotFound) {
		return false, err
	}
	if d.cfg.Metrics != nil {
		d.cfg.Metrics.removed.WithLabelValues(d.cfg.Origin).Inc()
	}
	d.cfg.Log.Info().Str("tenant", p.Tenant).Str("device", subscriptions.DeviceRef(sub.AppID, sub.DeviceID)).Str("reason", dev.Reason).
		Msg("device subscription removed on the relay's word (tombstone kept: pushctl subscriptions restore)")
	return true, nil
}

// Restore puts the subscription of a tombstone back (as a fresh refresh)
// and deletes the tombstone.
func (d *Deliverer) Restore(ctx context.Context, t pushlog.Tombstone) (subscriptions.Subscription, error) {
	if d.cfg.Subscriptions == nil || d.cfg.Tombstones == nil {
		return subscriptions.Subscription{}, errors.New("restoring a subscription: no subscription or tombstone store")
	}
	sub := t.Subscription
	key := sub.Key
	sub.Key, sub.ExpiresAt = "", time.Time{}
	saved, _, err := d.cfg.Subscriptions.Put(ctx, sub)
	if err != nil {
		return subscriptions.Subscription{}, fmt.Errorf("restoring subscription %s: %w", subscriptions.DeviceRef(sub.AppID, sub.DeviceID), err)
	}
	if err := d.cfg.Tombstones.Delete(ctx, key); err != nil {
		return saved, err
	}
	if d.cfg.Metrics != nil {
		d.cfg.Metrics.restored.Inc()
	}
	return saved, nil
}

// RestoreGone restores, from their tombstones, the subscriptions of the
// recipients of notes that a device-gone verdict removed (a redrive
// after the verdict was disproved). It returns how many it restored.
func (d *Deliverer) RestoreGone(ctx context.Context, userKey string, notes ...relayproto.Notification) (int, error) {
	if d.cfg.Tombstones == nil || userKey == "" {
		return 0, nil
	}
	n := 0
	for _, note := range notes {
		for _, rc := range note.Recipients {
			t, err := d.cfg.Tombstones.Get(ctx, subscriptions.Key(userKey, rc.AppID, rc.DeviceID))
			if errors.Is(err, pushlog.ErrNoTombstone) {
				continue
			}
			if err != nil {
				return n, err
			}
			if _, err := d.Restore(ctx, t); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// SentRecord builds the PUSH_SENT record of p after answer a.
func (d *Deliverer) SentRecord(p Push, a Answer, batchID string, attempts int, took time.Duration) pushlog.SentRecord {
	now := d.cfg.Now()
	rec := pushlog.SentRecord{
		BatchID: batchID, Tenant: p.Tenant, UserKey: p.UserKey,
		Count: p.Count, Exact: p.Exact, Previous: p.Previous, Events: len(p.Sequences),
		Devices: p.Devices(), Gone: len(a.Gone), Rejected: len(a.AppFaults), Attempts: attempts,
		LatencyMS: float64(took.Microseconds()) / 1000, SentAt: now.UTC(), Origin: d.cfg.Origin,
	}
	if len(p.Notifications) > 0 {
		rec.ID = p.Notifications[0].ID
	}
	if len(p.Sequences) > 0 {
		rec.FirstSeq, rec.LastSeq = slices.Min(p.Sequences), slices.Max(p.Sequences)
	}
	if !p.FirstEventAt.IsZero() {
		rec.EventToPushMS = float64(now.Sub(p.FirstEventAt).Microseconds()) / 1000
	}
	return rec
}

// RecordSent publishes rec to PUSH_SENT; async publishes it without
// waiting for the acknowledgement (the dispatcher's hot path).
func (d *Deliverer) RecordSent(ctx context.Context, rec pushlog.SentRecord, async bool) error {
	data, err := pushlog.Encode(rec)
	if err != nil {
		return err
	}
	if async {
		_, err = d.cfg.JS.PublishAsync(pushlog.SentSubject(rec.UserKey), data)
	} else {
		_, err = d.cfg.JS.Publish(ctx, pushlog.SentSubject(rec.UserKey), data)
	}
	if err != nil {
		return fmt.Errorf("recording a sent push: %w", err)
	}
	return nil
}

// DeadLetters builds the dead letters of p's notes (one per note).
func (d *Deliverer) DeadLetters(p Push, notes []relayproto.Notification, reason, lastErr string, attempts int, deviceReasons map[string]string) []pushlog.DeadLetter {
	seqs := slices.Clone(p.Sequences)
	slices.Sort(seqs)
	seqs = slices.Compact(seqs) // a redelivered event is one event
	now := d.cfg.Now().UTC()
	out := make([]pushlog.DeadLetter, 0, len(notes))
	for _, n := range notes {
		out = append(out, pushlog.DeadLetter{
			Tenant: p.Tenant, User: p.User, UserKey: p.UserKey, Reason: reason,
			Attempts: attempts, LastError: lastErr, Sequences: seqs, Notification: n,
			DeviceReasons: deviceReasons, FirstEventAt: p.FirstEventAt, DeadAt: now,
		})
	}
	return out
}

// DeadLetter publishes dl to PUSH_DEAD and waits for the acknowledgement:
// once it is stored, the events it covers may be acknowledged.
func (d *Deliverer) DeadLetter(ctx context.Context, dl pushlog.DeadLetter) error {
	data, err := pushlog.Encode(dl)
	if err != nil {
		return err
	}
	if _, err := d.cfg.JS.Publish(ctx, pushlog.DeadSubject(dl.UserKey), data); err != nil {
		return fmt.Errorf("publishing a dead letter: %w", err)
	}
	if d.cfg.Metrics != nil {
		d.cfg.Metrics.deadLetters.WithLabelValues(dl.Reason).Inc()
	}
	d.cfg.Log.Warn().Str("tenant", dl.Tenant).Str("user", dl.User).Str("reason", dl.Reason).Int("attempts", dl.Attempts).
		Str("last_error", dl.LastError).Int("events", len(dl.Sequences)).Msg("notification dead-lettered")
	return nil
}

// Result is what became of one push sent with Send.
type Result struct {
	Push Push
	// Answer accumulates the relay's answers over the attempts; its
	// Transient devices are those still not delivered when Send gave up.
	Answer Answer
	// Paused are devices not sent because their tenant+app is paused.
	Paused []Device
	// Attempts counts relay requests; Err is why Send gave up on the
	// request, if it did.
	Attempts int
	Err      error
	// Sent is the PUSH_SENT record, when some device got the badge.
	Sent *pushlog.SentRecord
}

// Done reports whether nothing of the push is left to send: every device
// delivered, gone, or refused by an app fault.
func (r Result) Done() bool {
	return r.Err == nil && len(r.Answer.Transient) == 0 && len(r.Answer.Missing) == 0 && len(r.Paused) == 0
}

// Send is the whole path for one-off pushes (redrive, replay, the probe):
// it holds back devices of paused tenant+apps, sends the rest in batches,
// retries transient devices under the policy (the relay's back-off not
// counted), applies every answer (Settle) and records the pushes that
// reached a device in PUSH_SENT. It writes no dead letter: the caller
// keeps what is not done.
func (d *Deliverer) Send(ctx context.Context, pushes []Push) []Result {
	results := make([]Result, len(pushes))
	remaining := make([]Push, len(pushes))
	for i, p := range pushes {
		results[i].Push = p
		remaining[i] = d.hold(p, &results[i])
	}
	retrier := NewRetrier(d.cfg.Policy)
	start := d.cfg.Now()
	batchID := uuid.NewString()
	for {
		var notes []relayproto.Notification
		for _, p := range remaining {
			notes = append(notes, p.Notifications...)
		}
		if len(notes) == 0 {
			break
		}
		var all []relayproto.NotificationResult
		var reqErr error
		for batch := range slices.Chunk(notes, relayproto.MaxNotificationsPerRequest) {
			resp, attempts, err := Publish(ctx, d.cfg.Relay, d.cfg.URI, batch, d.cfg.Policy, nil)
			for i := range results {
				results[i].Attempts += attempts
			}
			if err != nil {
				reqErr = err
				break
			}
			all = append(all, resp.Results...)
		}
		if reqErr != nil {
			giveUp(results, remaining, reqErr)
			break
		}
		var backOff time.Duration
		retry := false
		for i, p := range remaining {
			if len(p.Notifications) == 0 {
				continue
			}
			a := Classify(p, all)
			d.Settle(ctx, p, a)
			merge(&results[i].Answer, a)
			remaining[i] = again(p, a)
			results[i].Answer.Transient, results[i].Answer.Missing = a.Transient, a.Missing
			if a.Retry() {
				retry = true
				backOff = max(backOff, a.BackOff)
			}
		}
		if !retry {
			break
		}
		var wait time.Duration
		if backOff > 0 {
			wait = retrier.Throttled(backOff)
		} else {
			var spent error
			if wait, spent = retrier.Failed(0); spent != nil {
				break
			}
		}
		if err := Sleep(ctx, wait); err != nil {
			giveUp(results, remaining, err)
			break
		}
	}
	took := d.cfg.Now().Sub(start)
	for i := range results {
		r := &results[i]
		if r.Answer.DeliveredTotal() == 0 {
			continue
		}
		rec := d.SentRecord(r.Push, r.Answer, batchID, r.Attempts, took)
		if err := d.RecordSent(ctx, rec, false); err != nil {
			d.cfg.Log.Debug().Err(err).Msg("recording a sent push")
		}
		r.Sent = &rec
	}
	return results
}

// giveUp records err on the results of the pushes that still have
// notifications to send.
func giveUp(results []Result, remaining []Push, err error) {
	for i := range results {
		if len(remaining[i].Notifications) > 0 {
			results[i].Err = err
		}
	}
}

// hold returns p without the recipients of paused tenant+apps, which it
// notes in r.
func (d *Deliverer) hold(p Push, r *Result) Push {
	out := p
	out.Notifications = nil
	for _, n := range p.Notifications {
		kept := n
		kept.Recipients = nil
		for _, rc := range n.Recipients {
			if ok, _, until := d.cfg.Breakers.Allow(p.Tenant, rc.AppID); !ok {
				r.Paused = append(r.Paused, Device{NotificationID: n.ID, Recipient: rc,
					Reason: fmt.Sprintf("sending for %s app %s is paused after app faults until %s", p.Tenant, rc.AppID, until.UTC().Format(time.RFC3339))})
				continue
			}
			kept.Recipients = append(kept.Recipients, rc)
		}
		if len(kept.Recipients) > 0 {
			out.Notifications = append(out.Notifications, kept)
		}
	}
	return out
}

// again is what of p is to be sent again after a: the transient devices
// and the notifications the relay did not mention, under new ids.
func again(p Push, a Answer) Push {
	out := p
	out.Notifications = nil
	byNote := map[string][]relayproto.Recipient{}
	for _, dev := range a.Transient {
		byNote[dev.NotificationID] = append(byNote[dev.NotificationID], dev.Recipient)
	}
	for _, n := range p.Notifications {
		if rcs := byNote[n.ID]; len(rcs) > 0 {
			n.Recipients = rcs
			n.ID = uuid.NewString()
			out.Notifications = append(out.Notifications, n)
		}
	}
	for _, n := range a.Missing {
		n.ID = uuid.NewString()
		out.Notifications = append(out.Notifications, n)
	}
	return out
}

// merge adds b's final outcomes to a.
func merge(a *Answer, b Answer) {
	for app, n := range b.Delivered {
		if a.Delivered == nil {
			a.Delivered = map[string]int{}
		}
		a.Delivered[app] += n
	}
	a.Gone = append(a.Gone, b.Gone...)
	a.Kept = append(a.Kept, b.Kept...)
	a.AppFaults = append(a.AppFaults, b.AppFaults...)
	a.BackOff = max(a.BackOff, b.BackOff)
}
