package dispatcher

// The dispatcher's use of the delivery path (internal/delivery): one
// Deliverer per dispatcher, made when the first answer needs it, holding
// the tenant+app breakers and writing the records.

import (
	"context"
	"sync"
	"time"

	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/dispatcher/badges"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// deliveryPath is the sender's Deliverer, made once.
type deliveryPath struct {
	once sync.Once
	d    *delivery.Deliverer
}

// get returns the dispatcher's Deliverer, making it on first use.
func (p *deliveryPath) get(d *Dispatcher) *delivery.Deliverer {
	p.once.Do(func() {
		m, err := delivery.NewMetrics(d.reg, "delivery")
		if err != nil {
			d.log.Warn().Err(err).Msg("delivery metrics not registered")
			m, _ = delivery.NewMetrics(nil, "delivery")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tombs, err := pushlog.OpenTombstones(ctx, d.js)
		if err != nil {
			// Without tombstones no verdict could be undone: no
			// subscription is removed until provisioning adds the bucket.
			d.log.Error().Err(err).Msg("no tombstones bucket (run pushctl provision): subscriptions of gone devices are kept")
			tombs = nil
		}
		p.d = delivery.New(delivery.Config{
			JS: d.js, Subscriptions: d.subs, Tombstones: tombs,
			// The tenant+app breakers cool down like the relay client's.
			Breakers: delivery.NewBreakers(delivery.BreakerConfig{Cooldown: d.cfg.Relay.BreakerCooldown, MaxCooldown: d.cfg.Relay.BreakerMaxCooldown,
				OnChange: delivery.OnBreakerChange(d.log, m)}),
			Origin: delivery.OriginDispatcher, Metrics: m, Log: d.log,
		})
	})
	return p.d
}

// allowed returns the subscriptions whose tenant+app is not paused, and,
// when none is, when a trial may go.
func allowed(b *delivery.Breakers, tenant string, subs []subscriptions.Subscription) ([]subscriptions.Subscription, time.Time) {
	var out []subscriptions.Subscription
	var until time.Time
	for _, s := range subs {
		ok, _, u := b.Allow(tenant, s.AppID)
		if ok {
			out = append(out, s)
			continue
		}
		if until.IsZero() || u.Before(until) {
			until = u
		}
	}
	return out, until
}

// pushOf is the delivery path's view of a user's push: its notes and the
// events it covers.
func pushOf(u *user, push badges.Push, notes []relayproto.Notification, evs []*held) delivery.Push {
	p := delivery.Push{Tenant: u.Tenant, User: u.Name, UserKey: u.Key, Notifications: notes,
		Count: push.Count, Exact: push.Exact, Previous: push.Previous}
	for _, h := range evs {
		p.Sequences = append(p.Sequences, h.seq)
	}
	_, _, p.FirstEventAt = span(evs)
	return p
}
