package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// PushDeps is what Repush needs.
type PushDeps struct {
	JS            jetstream.JetStream
	Keyer         *events.Keyer
	Unread        *unread.Store
	Subscriptions *subscriptions.Store
	Settings      delivery.ProxySource
	Relay         delivery.Publisher
	// Policy is the retry policy; by default one attempt (waiting out the
	// relay's back-pressure all the same).
	Policy delivery.Policy
	// Log receives removals of gone devices; none when zero.
	Log zerolog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// PushResult is what Repush did.
type PushResult struct {
	// Count is the count pushed; Previous the count the state held before.
	Count, Previous int
	// PreviousPushed is the count last pushed before, if any.
	PreviousPushed *int
	// Devices is how many devices the push went to, and how the relay
	// answered for them (Rejected: app faults and paused apps).
	Devices                          int
	Delivered, Gone, Retry, Rejected int
}

// Errors of Repush.
var (
	// ErrNewerEvents means the user's state has applied events the replay
	// did not read; its count would set the badge back.
	ErrNewerEvents = errors.New("the user has newer events than the replay read")
	// ErrNoDevices means the user has no device subscription to push to.
	ErrNoDevices = errors.New("the user has no device subscriptions")
	// ErrProxyDisabled means the proxy is not enabled.
	ErrProxyDisabled = delivery.ErrProxyDisabled
)

// Repush makes the report's final count the user's unread state (count,
// exactness and last event applied) and sends it once to every device of
// the user, whatever the devices showed before, through the delivery path
// (internal/delivery), which records the push in PUSH_SENT and removes
// (with a tombstone) the subscriptions of devices the relay reports gone.
// It then records the push in the user's state. The dispatchers merge the
// new state with what they hold (they reapply their events on top of a
// state another writer changed).
//
// It refuses when the state has applied events past the report's last one
// (replay again to include them) and when the user has no devices.
func Repush(ctx context.Context, deps PushDeps, r Report) (PushResult, error) {
	now := time.Now
	if deps.Now != nil {
		now = deps.Now
	}
	uris := delivery.RelayURI(deps.Settings)
	if _, err := uris(ctx); err != nil {
		return PushResult{}, err
	}
	tombs, err := pushlog.OpenTombstones(ctx, deps.JS)
	if err != nil {
		return PushResult{}, err
	}
	subs, err := deps.Subscriptions.List(ctx, r.Tenant, r.User)
	if err != nil {
		return PushResult{}, err
	}
	if len(subs) == 0 {
		return PushResult{}, ErrNoDevices
	}
	key := deps.Keyer.UserKey(r.Tenant, r.User)
	lastSeq := r.Final.LastSeq

	var previous int
	var previousPushed *int
	_, err = deps.Unread.Update(ctx, key, func(cur unread.State) (unread.State, error) {
		if cur.LastSeq > lastSeq {
			return cur, fmt.Errorf("%w (state at event %d, replay up to %d): replay again without --until", ErrNewerEvents, cur.LastSeq, lastSeq)
		}
		previous, previousPushed = cur.Count, cur.LastPushedCount
		cur.Count, cur.Exact, cur.LastSeq = r.Final.Count, r.Final.Exact, lastSeq
		if r.Final.LastEventAt.After(cur.LastEventAt) {
			cur.LastEventAt = r.Final.LastEventAt
		}
		return cur, nil
	})
	if err != nil {
		return PushResult{}, fmt.Errorf("setting the unread state: %w", err)
	}

	res := PushResult{Count: r.Final.Count, Previous: previous, PreviousPushed: previousPushed, Devices: len(subs)}
	p := delivery.Push{Tenant: r.Tenant, User: r.User, UserKey: key, Count: r.Final.Count, Exact: r.Final.Exact, Previous: previousPushed}
	for _, st := range r.Steps {
		p.Sequences = append(p.Sequences, st.Seq)
	}
	for _, s := range subs {
		pl := relayproto.Payload{TenantID: r.Tenant, UnseenEmailCount: r.Final.Count, Language: s.Language}
		if s.Options.Has(subscriptions.OptionBackgroundSync) {
			pl.BackgroundSyncType = relayproto.BackgroundSyncEmail
		}
		p.Notifications = append(p.Notifications, relayproto.Notification{ID: uuid.NewString(), Payload: pl, Recipients: []relayproto.Recipient{{
			AppID: s.AppID, DeviceID: s.DeviceID, LastSubscriptionUpdate: s.LastSubscriptionUpdate, InstallationID: s.InstallationID,
		}}})
	}
	pol := deps.Policy
	if pol == (delivery.Policy{}) {
		pol = delivery.Policy{MaxAttempts: 1}
	}
	d := delivery.New(delivery.Config{
		JS: deps.JS, Relay: deps.Relay, URI: uris, Subscriptions: deps.Subscriptions, Tombstones: tombs,
		Policy: pol, Origin: delivery.OriginReplay, Log: deps.Log, Now: now,
	})
	out := d.Send(ctx, []delivery.Push{p})[0]
	res.Delivered, res.Gone = out.Answer.DeliveredTotal(), len(out.Answer.Gone)
	res.Rejected = len(out.Answer.AppFaults) + len(out.Paused)
	res.Retry = len(out.Answer.Transient)
	for _, m := range out.Answer.Missing {
		res.Retry += len(m.Recipients)
	}
	if res.Delivered > 0 {
		_, _ = deps.Unread.Update(ctx, key, func(cur unread.State) (unread.State, error) {
			if cur.LastSeq != r.Final.LastSeq {
				return cur, nil // newer events: the dispatcher pushes their count
			}
			return cur.Pushed(res.Count, r.Final.LastSeq, now()), nil
		})
	}
	if out.Err != nil {
		res.Retry = res.Devices - res.Delivered - res.Gone - res.Rejected
		return res, fmt.Errorf("pushing to the relay: %w", out.Err)
	}
	return res, nil
}
