package imap

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
)

// publisher hands the watched users' snapshots to the publish function,
// up to MaxPublishBatch a call, from one goroutine. It keeps the latest
// snapshot of each user until it is stored: a failed call is tried again
// after a back-off, and only a newer snapshot of the same user replaces an
// unstored one (a snapshot states the whole count, so the newer one says
// all the older one did). The watch goroutines never wait for it.
type publisher struct {
	publish PublishFunc
	metrics *watchMetrics
	log     zerolog.Logger
	retry   *retry
	sleep   func(ctx context.Context, d time.Duration) error

	mu sync.Mutex
	// pending holds each user's unstored snapshot; queue the users with
	// one, oldest first.
	pending map[*watched]events.Event
	queue   []*watched
	// wake has a token when pending may have work.
	wake chan struct{}
}

func newPublisher(cfg WatchConfig, m *watchMetrics) *publisher {
	return &publisher{
		publish: cfg.Publish, metrics: m, log: cfg.Log,
		retry:   newRetry(cfg.RetryMin, cfg.RetryMax),
		sleep:   cfg.Sleep,
		pending: make(map[*watched]events.Event),
		wake:    make(chan struct{}, 1),
	}
}

// put hands u's latest snapshot over, replacing an unstored older one.
func (p *publisher) put(u *watched, e events.Event) {
	p.mu.Lock()
	if _, ok := p.pending[u]; !ok {
		p.queue = append(p.queue, u)
	}
	p.pending[u] = e
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take removes up to n snapshots, oldest first.
func (p *publisher) take(n int) ([]*watched, []events.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n = min(n, len(p.queue))
	if n == 0 {
		return nil, nil
	}
	users := make([]*watched, n)
	copy(users, p.queue)
	p.queue = append(p.queue[:0], p.queue[n:]...)
	evs := make([]events.Event, n)
	for i, u := range users {
		evs[i] = p.pending[u]
		delete(p.pending, u)
	}
	return users, evs
}

// giveBack returns snapshots that were not stored to the front of the
// queue, except those a newer snapshot of their user replaced meanwhile.
func (p *publisher) giveBack(users []*watched, evs []events.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	back := make([]*watched, 0, len(users)+len(p.queue))
	for i, u := range users {
		if _, newer := p.pending[u]; newer {
			continue
		}
		p.pending[u] = evs[i]
		back = append(back, u)
	}
	p.queue = append(back, p.queue...)
}

// size is the number of unstored snapshots.
func (p *publisher) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// run publishes until ctx ends, waiting a back-off after each failure.
func (p *publisher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for {
			stored, err := p.once(ctx)
			if err != nil {
				if p.sleep(ctx, p.retry.next()) != nil {
					return
				}
				continue
			}
			if !stored {
				break
			}
			p.retry.reset()
		}
	}
}

// once publishes one batch and reports whether there was one.
func (p *publisher) once(ctx context.Context) (bool, error) {
	users, evs := p.take(MaxPublishBatch)
	if len(evs) == 0 {
		return false, nil
	}
	if err := p.publish(ctx, evs); err != nil {
		p.metrics.events.WithLabelValues(outcomeFailed).Add(float64(len(evs)))
		p.giveBack(users, evs)
		p.log.Warn().Err(err).Int("snapshots", len(evs)).Msg("publishing IMAP unread snapshots failed; keeping them to try again")
		return false, err
	}
	p.metrics.events.WithLabelValues(outcomePublished).Add(float64(len(evs)))
	return true, nil
}

// flush publishes what is left, once, within ctx: at shutdown, after the
// sessions ended. What it cannot store is read again at the next start.
func (p *publisher) flush(ctx context.Context) {
	for {
		stored, err := p.once(ctx)
		if err != nil {
			p.log.Warn().Err(err).Int("snapshots", p.size()).Msg("IMAP watcher stopping with unstored snapshots; the next start reads the counts again")
			return
		}
		if !stored {
			return
		}
	}
}
