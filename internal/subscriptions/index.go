package subscriptions

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// pruneInterval is how often the index drops expired subscriptions.
const pruneInterval = time.Minute

// Index is an in-memory copy of every subscription, kept current by a watch
// of the bucket, so that the dispatcher finds a user's devices without a
// round trip per push. Subscriptions past their TTL are left out even
// before the server removes them. It is safe for concurrent use.
type Index struct {
	store *Store

	mu     sync.RWMutex
	byUser map[string]map[string]Subscription
	count  int
}

// Index starts watching the bucket and returns once the current
// subscriptions are loaded. It follows changes until ctx ends.
func (s *Store) Index(ctx context.Context) (*Index, error) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watching subscriptions: %w", err)
	}
	ix := &Index{store: s, byUser: map[string]map[string]Subscription{}}
	for loaded := false; !loaded; {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, fmt.Errorf("loading subscriptions: %w", ctx.Err())
		case entry, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("loading subscriptions: the watch ended early")
			}
			if entry == nil {
				loaded = true
				continue
			}
			ix.apply(entry)
		}
	}
	go func() {
		defer func() { _ = w.Stop() }()
		tick := time.NewTicker(pruneInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				ix.prune(s.now())
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				if entry != nil {
					ix.apply(entry)
				}
			}
		}
	}()
	return ix, nil
}

func (ix *Index) apply(entry jetstream.KeyValueEntry) {
	key := entry.Key()
	dot := strings.LastIndexByte(key, '.')
	if dot < 0 {
		return
	}
	user := key[:dot]
	if entry.Operation() != jetstream.KeyValuePut {
		ix.Forget(key)
		return
	}
	sub, err := ix.store.decode(entry)
	if err != nil {
		ix.Forget(key)
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	m := ix.byUser[user]
	if m == nil {
		m = map[string]Subscription{}
		ix.byUser[user] = m
	}
	if _, ok := m[key]; !ok {
		ix.count++
	}
	m[key] = sub
}

// Forget drops the subscription stored under key from the index at once,
// ahead of the watch, for a device just found gone.
func (ix *Index) Forget(key string) {
	dot := strings.LastIndexByte(key, '.')
	if dot < 0 {
		return
	}
	user := key[:dot]
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if m := ix.byUser[user]; m != nil {
		if _, ok := m[key]; ok {
			delete(m, key)
			ix.count--
		}
		if len(m) == 0 {
			delete(ix.byUser, user)
		}
	}
}

// ForUser returns the live subscriptions of the user key
// (events.Keyer.UserKey), sorted by app and device.
func (ix *Index) ForUser(userKey string) []Subscription {
	now := ix.store.now()
	ix.mu.RLock()
	m := ix.byUser[userKey]
	out := make([]Subscription, 0, len(m))
	for _, sub := range m {
		if sub.ExpiresAt.IsZero() || now.Before(sub.ExpiresAt) {
			out = append(out, sub)
		}
	}
	ix.mu.RUnlock()
	sortSubscriptions(out)
	return out
}

// Len is how many subscriptions the index holds, expired ones included
// until the server removes them.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.count
}

// prune drops subscriptions that expired before now: the server removes
// them by age without telling watchers.
func (ix *Index) prune(now time.Time) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for user, m := range ix.byUser {
		for key, sub := range m {
			if !sub.ExpiresAt.IsZero() && !now.Before(sub.ExpiresAt) {
				delete(m, key)
				ix.count--
			}
		}
		if len(m) == 0 {
			delete(ix.byUser, user)
		}
	}
}
