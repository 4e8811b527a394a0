package replay

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
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushnow"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// Publisher sends a batch once; *relayclient.Client implements it.
type Publisher = pushnow.Publisher

// ProxySource gives the proxy settings; *settings.Store implements it.
type ProxySource = pushnow.ProxySource

// PushDeps is what Repush needs.
type PushDeps struct {
	JS            jetstream.JetStream
	Keyer         *events.Keyer
	Unread        *unread.Store
	Subscriptions *subscriptions.Store
	Settings      ProxySource
	Relay         Publisher
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
	// answered for them.
	Devices int
	pushnow.Tally
}

// Errors of Repush.
var (
	// ErrNewerEvents means the user's state has applied events the replay
	// did not read; its count would set the badge back.
	ErrNewerEvents = errors.New("the user has newer events than the replay read")
	// ErrNoDevices means the user has no device subscription to push to.
	ErrNoDevices = errors.New("the user has no device subscriptions")
	// ErrProxyDisabled means the proxy is not enabled.
	ErrProxyDisabled = pushnow.ErrProxyDisabled
)

// Repush makes the report's final count the user's unread state (count,
// exactness and last event applied) and sends it once to every device of
// the user, whatever the devices showed before. It then records the push
// in the user's state and in PUSH_SENT, and removes the subscriptions of
// devices the relay reports gone. The dispatchers merge the new state with
// what they hold (they reapply their events on top of a state another
// writer changed).
//
// It refuses when the state has applied events past the report's last one
// (replay again to include them) and when the user has no devices.
func Repush(ctx context.Context, deps PushDeps, r Report) (PushResult, error) {
	now := time.Now
	if deps.Now != nil {
		now = deps.Now
	}
	uri, err := pushnow.RelayURI(ctx, deps.Settings)
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
	notes := make([]relayproto.Notification, 0, len(subs))
	for _, s := range subs {
		p := relayproto.Payload{TenantID: r.Tenant, UnseenEmailCount: r.Final.Count, Language: s.Language}
		if s.Options.Has(subscriptions.OptionBackgroundSync) {
			p.BackgroundSyncType = relayproto.BackgroundSyncEmail
		}
		notes = append(notes, relayproto.Notification{ID: uuid.NewString(), Payload: p, Recipients: []relayproto.Recipient{{
			AppID: s.AppID, DeviceID: s.DeviceID, LastSubscriptionUpdate: s.LastSubscriptionUpdate, InstallationID: s.InstallationID,
		}}})
	}
	start := now()
	var failed error
	for batch := range slices.Chunk(notes, relayproto.MaxNotificationsPerRequest) {
		resp, err := deps.Relay.Publish(ctx, uri, batch)
		if err != nil {
			failed = err
			res.Retry += len(batch)
			continue
		}
		tally(ctx, resp, key, deps.Subscriptions, &res)
	}
	if res.Delivered > 0 {
		record(ctx, deps, key, r, res, start, now())
	}
	if failed != nil {
		return res, fmt.Errorf("pushing to the relay: %w", failed)
	}
	return res, nil
}

// tally counts the device results and removes the subscriptions of gone
// devices, as the dispatcher does.
func tally(ctx context.Context, resp relayproto.Response, key string, subs *subscriptions.Store, res *PushResult) {
	for _, n := range resp.Results {
		for _, d := range n.Devices {
			res.Tally.Add(d.Status)
			if d.Status == relayproto.DeviceGone {
				_ = subs.DeleteKey(ctx, key+"."+subscriptions.DeviceHash(d.AppID, d.DeviceID))
			}
		}
	}
}

// record notes the push in the state and in PUSH_SENT; the push went out
// whatever they say, so failures are not reported.
func record(ctx context.Context, deps PushDeps, key string, r Report, res PushResult, start, end time.Time) {
	_, _ = deps.Unread.Update(ctx, key, func(cur unread.State) (unread.State, error) {
		if cur.LastSeq != r.Final.LastSeq {
			return cur, nil // newer events: the dispatcher pushes their count
		}
		return cur.Pushed(res.Count, r.Final.LastSeq, end), nil
	})
	rec := dispatcher.SentRecord{
		ID: uuid.NewString(), BatchID: "replay", Tenant: r.Tenant, UserKey: key,
		Count: res.Count, Exact: r.Final.Exact, Previous: res.PreviousPushed,
		LastSeq: r.Final.LastSeq, Devices: res.Devices, Gone: res.Gone, Rejected: res.Rejected, Attempts: 1,
		LatencyMS: float64(end.Sub(start)) / float64(time.Millisecond), SentAt: end.UTC(),
	}
	if len(r.Steps) > 0 {
		rec.FirstSeq, rec.Events = r.Steps[0].Seq, len(r.Steps)
	}
	if data, err := json.Marshal(rec); err == nil {
		_, _ = deps.JS.Publish(ctx, dispatcher.SentSubject(key), data)
	}
}
