package deadletter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// Redriver sends dead letters to the relay again, through the delivery
// path (internal/delivery).
type Redriver struct {
	// JS is the JetStream of the deployment. Required.
	JS jetstream.JetStream
	// Relay sends the notifications. Required.
	Relay delivery.Publisher
	// Settings gives the relay's URI; the proxy must be enabled. Required.
	Settings delivery.ProxySource
	// Unread, when set, refreshes each letter's count from the user's
	// current state, so a redrive never sets a badge back to an old
	// count, and records the push in that state.
	Unread *unread.Store
	// Subscriptions, when set, are brought up to date before sending:
	// a subscription a device-gone verdict removed is restored from its
	// tombstone (the verdict was wrong, or the letter would not be
	// redriven), and devices the relay reports gone are removed again
	// with a tombstone, as the dispatcher does.
	Subscriptions delivery.Subscriptions
	// Tombstones is the tombstone store; opened from JS when nil.
	Tombstones *pushlog.Tombstones
	// Policy is the retry policy; by default one attempt per letter
	// (waiting out the relay's back-pressure all the same).
	Policy delivery.Policy
	// Log receives removals and restores; none when zero.
	Log zerolog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Progress, when set, is called after each letter with how many are
	// done out of how many.
	Progress func(done, total int)
}

// Outcome is what became of one letter.
type Outcome struct {
	Letter Letter
	// Count is the unread count sent; Refreshed says it was taken from the
	// user's current state instead of the letter.
	Count     int
	Refreshed bool
	// Restored counts subscriptions restored from their tombstones.
	Restored int
	// Device results of the relay's answers: Rejected counts app faults
	// (and devices of a paused tenant+app), Retry devices still asking for
	// a retry.
	Delivered, Gone, Retry, Rejected int
	// Deleted is true when the letter was removed from PUSH_DEAD: the
	// relay took the notification for every device (or the device is gone).
	Deleted bool
	// Err is why the letter was kept, if it was.
	Err error
}

// ErrProxyDisabled is returned by Redrive when the proxy is not enabled.
var ErrProxyDisabled = delivery.ErrProxyDisabled

// Redrive sends each letter's notification again and deletes the letters
// the relay took. It fails as a whole only when the settings cannot be
// read or the proxy is disabled; the fate of each letter is in its Outcome.
func (r *Redriver) Redrive(ctx context.Context, letters []Letter) ([]Outcome, error) {
	uris := delivery.RelayURI(r.Settings)
	if _, err := uris(ctx); err != nil {
		return nil, err
	}
	tombs := r.Tombstones
	if tombs == nil && r.Subscriptions != nil {
		var err error
		if tombs, err = pushlog.OpenTombstones(ctx, r.JS); err != nil {
			return nil, err
		}
	}
	pol := r.Policy
	if pol == (delivery.Policy{}) {
		pol = delivery.Policy{MaxAttempts: 1}
	}
	d := delivery.New(delivery.Config{
		JS: r.JS, Relay: r.Relay, URI: uris, Subscriptions: r.Subscriptions, Tombstones: tombs,
		Policy: pol, Origin: delivery.OriginRedrive, Log: r.Log, Now: r.Now,
	})
	out := make([]Outcome, 0, len(letters))
	for _, l := range letters {
		out = append(out, r.redrive(ctx, d, tombs, l))
		if r.Progress != nil {
			r.Progress(len(out), len(letters))
		}
	}
	return out, nil
}

func (r *Redriver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Redriver) redrive(ctx context.Context, d *delivery.Deliverer, tombs *pushlog.Tombstones, l Letter) Outcome {
	o := Outcome{Letter: l, Count: l.Notification.Payload.UnseenEmailCount}
	switch {
	case l.Invalid != "":
		o.Err = errors.New(l.Invalid)
		return o
	case len(l.Notification.Recipients) == 0:
		o.Err = errors.New("the dead letter has no recipients to send to")
		return o
	}
	n := l.Notification
	n.Recipients = slices.Clone(n.Recipients)
	n.ID = uuid.NewString()
	var lastSeq uint64
	if len(l.Sequences) > 0 {
		lastSeq = slices.Max(l.Sequences)
	}
	if r.Unread != nil && l.UserKey != "" {
		st, _, err := r.Unread.Get(ctx, l.UserKey)
		if err != nil {
			o.Err = fmt.Errorf("reading the user's unread state: %w", err)
			return o
		}
		if st.LastSeq > 0 && st.LastSeq >= lastSeq {
			o.Refreshed = st.Count != n.Payload.UnseenEmailCount
			o.Count, n.Payload.UnseenEmailCount, lastSeq = st.Count, st.Count, st.LastSeq
		}
	}
	if err := r.current(ctx, d, tombs, l.UserKey, &n, &o); err != nil {
		o.Err = err
		return o
	}

	p := delivery.Push{Tenant: l.Tenant, User: l.User, UserKey: l.UserKey, Notifications: []relayproto.Notification{n},
		Count: o.Count, Sequences: l.Sequences, FirstEventAt: l.FirstEventAt}
	res := d.Send(ctx, []delivery.Push{p})[0]
	o.Delivered, o.Gone = res.Answer.DeliveredTotal(), len(res.Answer.Gone)
	o.Rejected = len(res.Answer.AppFaults) + len(res.Paused)
	o.Retry = len(res.Answer.Transient)
	for _, m := range res.Answer.Missing {
		o.Retry += len(m.Recipients)
	}
	switch {
	case res.Err != nil:
		o.Err = res.Err
		return o
	case o.Retry > 0 || o.Rejected > 0:
		o.Err = fmt.Errorf("the relay did not take every device: %d to retry, %d refused by an app fault", o.Retry, o.Rejected)
		return o
	}
	if o.Delivered > 0 {
		r.record(ctx, l, o, lastSeq)
	}
	if err := Delete(ctx, r.JS, l.Seq); err != nil {
		o.Err = err
		return o
	}
	o.Deleted = true
	return o
}

// current brings the letter's recipients up to date with the stored
// subscriptions, first restoring those a device-gone verdict removed.
func (r *Redriver) current(ctx context.Context, d *delivery.Deliverer, tombs *pushlog.Tombstones, userKey string, n *relayproto.Notification, o *Outcome) error {
	if r.Subscriptions == nil || userKey == "" {
		return nil
	}
	for i, rc := range n.Recipients {
		key := subscriptions.Key(userKey, rc.AppID, rc.DeviceID)
		sub, err := r.Subscriptions.Get(ctx, key)
		if errors.Is(err, subscriptions.ErrNotFound) && tombs != nil {
			t, terr := tombs.Get(ctx, key)
			if errors.Is(terr, pushlog.ErrNoTombstone) {
				continue // unsubscribed or expired: sent as the letter says
			}
			if terr != nil {
				return terr
			}
			if sub, err = d.Restore(ctx, t); err == nil {
				o.Restored++
			}
		}
		if err != nil {
			return fmt.Errorf("reading the subscription of %s: %w", subscriptions.DeviceRef(rc.AppID, rc.DeviceID), err)
		}
		n.Recipients[i].LastSubscriptionUpdate = sub.LastSubscriptionUpdate
	}
	return nil
}

// record notes the push in the user's state, as the dispatcher does for
// the pushes it sends (the delivery path recorded it in PUSH_SENT). It is
// best effort: the push went out whatever it says.
func (r *Redriver) record(ctx context.Context, l Letter, o Outcome, lastSeq uint64) {
	if r.Unread == nil || l.UserKey == "" {
		return
	}
	now := r.now()
	_, _ = r.Unread.Update(ctx, l.UserKey, func(st unread.State) (unread.State, error) {
		if st.Count != o.Count && st.LastSeq > 0 {
			return st, nil // the count moved on meanwhile; the dispatcher will push it
		}
		return st.Pushed(o.Count, lastSeq, now), nil
	})
}
