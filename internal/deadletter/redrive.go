package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/pushnow"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// Publisher sends a batch once; *relayclient.Client implements it.
type Publisher = pushnow.Publisher

// ProxySource gives the proxy settings; *settings.Store implements it.
type ProxySource = pushnow.ProxySource

// SubscriptionRemover removes a device subscription by key;
// *subscriptions.Store implements it.
type SubscriptionRemover interface {
	DeleteKey(ctx context.Context, key string) error
}

// Redriver sends dead letters to the relay again.
type Redriver struct {
	// JS is the JetStream of the deployment. Required.
	JS jetstream.JetStream
	// Relay sends the notifications, one attempt each. Required.
	Relay Publisher
	// Settings gives the relay's URI; the proxy must be enabled. Required.
	Settings ProxySource
	// Unread, when set, refreshes each letter's count from the user's
	// current state, so a redrive never sets a badge back to an old
	// count, and records the push in that state.
	Unread *unread.Store
	// Subscriptions, when set, loses the subscriptions of devices the
	// relay reports gone, as the dispatcher does.
	Subscriptions SubscriptionRemover
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Outcome is what became of one letter.
type Outcome struct {
	Letter Letter
	// Count is the unread count sent; Refreshed says it was taken from the
	// user's current state instead of the letter.
	Count     int
	Refreshed bool
	// Device results of the relay's answer.
	pushnow.Tally
	// Deleted is true when the letter was removed from PUSH_DEAD: the
	// relay took the notification for every device (or the device is gone).
	Deleted bool
	// Err is why the letter was kept, if it was.
	Err error
}

// ErrProxyDisabled is returned by Redrive when the proxy is not enabled.
var ErrProxyDisabled = pushnow.ErrProxyDisabled

// Redrive sends each letter's notification again, one relay request per
// letter, and deletes the letters the relay took. It fails as a whole only
// when the settings cannot be read or the proxy is disabled; the fate of
// each letter is in its Outcome.
func (r *Redriver) Redrive(ctx context.Context, letters []Letter) ([]Outcome, error) {
	uri, err := pushnow.RelayURI(ctx, r.Settings)
	if err != nil {
		return nil, err
	}
	out := make([]Outcome, 0, len(letters))
	for _, l := range letters {
		out = append(out, r.redrive(ctx, uri, l))
	}
	return out, nil
}

func (r *Redriver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Redriver) redrive(ctx context.Context, uri string, l Letter) Outcome {
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
	if n.ID == "" {
		n.ID = uuid.NewString()
	}
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

	start := r.now()
	resp, err := r.Relay.Publish(ctx, uri, []relayproto.Notification{n})
	if err != nil {
		o.Err = err
		return o
	}
	var gone []relayproto.DeviceResult
	answered := false
	for _, res := range resp.Results {
		if res.ID != n.ID {
			continue
		}
		answered = true
		for _, d := range res.Devices {
			o.Tally.Add(d.Status)
			if d.Status == relayproto.DeviceGone {
				gone = append(gone, d)
			}
		}
	}
	if !answered {
		o.Err = errors.New("the relay's answer has no result for the notification")
		return o
	}
	r.prune(ctx, l.UserKey, gone)
	if o.Retry > 0 || o.Rejected > 0 {
		o.Err = fmt.Errorf("the relay did not take every device: %d to retry, %d rejected", o.Retry, o.Rejected)
		return o
	}
	if o.Delivered > 0 {
		r.record(ctx, l, n, o, lastSeq, start)
	}
	if err := Delete(ctx, r.JS, l.Seq); err != nil {
		o.Err = err
		return o
	}
	o.Deleted = true
	return o
}

// prune removes the subscriptions of gone devices; failures only leave
// them for the dispatcher to remove on its next push.
func (r *Redriver) prune(ctx context.Context, userKey string, gone []relayproto.DeviceResult) {
	if r.Subscriptions == nil || userKey == "" {
		return
	}
	for _, d := range gone {
		err := r.Subscriptions.DeleteKey(ctx, userKey+"."+subscriptions.DeviceHash(d.AppID, d.DeviceID))
		if err != nil && !errors.Is(err, subscriptions.ErrNotFound) {
			return
		}
	}
}

// record notes the push in the user's state and in PUSH_SENT, as the
// dispatcher does for the pushes it sends. Both are best effort: the push
// went out whatever they say.
func (r *Redriver) record(ctx context.Context, l Letter, n relayproto.Notification, o Outcome, lastSeq uint64, start time.Time) {
	now := r.now()
	if r.Unread != nil && l.UserKey != "" {
		_, _ = r.Unread.Update(ctx, l.UserKey, func(st unread.State) (unread.State, error) {
			if st.Count != o.Count && st.LastSeq > 0 {
				return st, nil // the count moved on meanwhile; the dispatcher will push it
			}
			return st.Pushed(o.Count, lastSeq, now), nil
		})
	}
	rec := dispatcher.SentRecord{
		ID: n.ID, BatchID: "redrive", Tenant: l.Tenant, UserKey: l.UserKey,
		Count: o.Count, Exact: false, Devices: o.Delivered, Gone: o.Gone, Attempts: 1,
		LatencyMS: float64(now.Sub(start)) / float64(time.Millisecond),
		SentAt:    now.UTC(),
	}
	if len(l.Sequences) > 0 {
		rec.FirstSeq, rec.LastSeq, rec.Events = slices.Min(l.Sequences), slices.Max(l.Sequences), len(l.Sequences)
	}
	if data, err := json.Marshal(rec); err == nil && l.UserKey != "" {
		_, _ = r.JS.Publish(ctx, dispatcher.SentSubject(l.UserKey), data)
	}
}
