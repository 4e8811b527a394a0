package subscriptions

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultCacheUsers is how many users' subscriptions a Cache holds when
// not told otherwise: about 100 MB with one device each.
const DefaultCacheUsers = 100_000

// maxReads bounds the reads of the bucket a Cache has in flight.
const maxReads = 8

// loadBatch is how many users one read of the bucket asks for: with at
// most 20 devices each (DefaultMaxPerUser), within the 1,024 entries the
// server answers at once.
const loadBatch = 32

// readTimeout bounds one read of the bucket.
const readTimeout = 10 * time.Second

// Cache holds the subscriptions of the users a dispatcher works on, so
// that it finds a user's devices without a round trip per push, in
// memory bounded by the users it holds (the least recently used are
// dropped beyond the limit), not by every subscription in the bucket.
//
// A user is read from the bucket when first asked for (one read for a
// batch of users, see Prefetch). A watch of the bucket's changes, started
// before any read, keeps the users held current. Each key keeps the
// revision it was last seen at, deletions included, so a read that races
// a change never brings an older value back: the newer of the two wins,
// whichever arrives last. The latest changes of users not held are kept
// a while too (maxRecent users), because a read may be answered by a
// replica a moment behind the watch. Subscriptions past their TTL are
// left out even before the server removes them. It is safe for
// concurrent use; its watch and reads live as long as the context given
// to Store.Cache.
type Cache struct {
	store    *Store
	maxUsers int
	ctx      context.Context

	mu    sync.Mutex
	users map[string]*cachedUser
	lru   *list.List // of *cachedUser, most recently used first
	subs  int        // live entries held
	// reads bounds the reads of the bucket in flight.
	reads chan struct{}
	// recent keeps the latest changes the watch saw of users not held,
	// for maxRecent users, so that a user read afresh from a replica a
	// moment behind the watch does not miss them; ring lists those users
	// in the order they came, next is the oldest slot.
	recent map[string]*recentChanges
	ring   [maxRecent]string
	next   int
}

// maxRecent bounds the users whose changes a Cache keeps while not
// holding them.
const maxRecent = 4096

// recentChanges are a user's changes seen while not held, and its slot.
type recentChanges struct {
	slot int
	keys map[string]cachedEntry
}

// cachedUser is one user's subscriptions, or a read of them in flight.
type cachedUser struct {
	key  string
	elem *list.Element
	// keys are the user's subscriptions by key, with deletions seen.
	keys map[string]cachedEntry
	// ready is closed when the first read ends; err is its error.
	ready chan struct{}
	err   error
}

// cachedEntry is a key's latest known revision: a subscription, or gone.
type cachedEntry struct {
	rev  uint64
	gone bool
	sub  Subscription
}

// Cache starts watching the bucket's changes and returns a Cache holding
// at most maxUsers users (DefaultCacheUsers when 0 or less). The watch
// and the reads run until ctx ends.
func (s *Store) Cache(ctx context.Context, maxUsers int) (*Cache, error) {
	if maxUsers <= 0 {
		maxUsers = DefaultCacheUsers
	}
	w, err := s.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watching subscriptions: %w", err)
	}
	c := &Cache{store: s, maxUsers: maxUsers, ctx: ctx, users: map[string]*cachedUser{}, lru: list.New(), recent: map[string]*recentChanges{},
		reads: make(chan struct{}, maxReads)}
	go c.follow(w)
	return c, nil
}

// follow applies the bucket's changes to the users held.
func (c *Cache) follow(w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-c.ctx.Done():
			return
		case entry, ok := <-w.Updates():
			if !ok {
				return // the watch ends only with ctx
			}
			if entry != nil {
				c.observe(entry)
			}
		}
	}
}

// observe merges one entry of the watch into the user it belongs to when
// that user is held, and keeps it apart otherwise (remember).
func (c *Cache) observe(entry jetstream.KeyValueEntry) {
	key := entry.Key()
	userKey, _, ok := cutLastDot(key)
	if !ok {
		return
	}
	e := cachedEntry{rev: entry.Revision(), gone: entry.Operation() != jetstream.KeyValuePut}
	if !e.gone {
		sub, err := c.store.decode(entry)
		if err != nil {
			// Unreadable: no device to push to, as for a deletion.
			e.gone = true
		} else {
			e.sub = sub
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if u := c.users[userKey]; u != nil {
		c.merge(u, key, e)
		return
	}
	c.remember(userKey, key, e)
}

// remember keeps a change of a user not held. c.mu is held.
func (c *Cache) remember(userKey, key string, e cachedEntry) {
	r := c.recent[userKey]
	if r == nil {
		if old := c.ring[c.next]; old != "" && c.recent[old] != nil && c.recent[old].slot == c.next {
			delete(c.recent, old)
		}
		r = &recentChanges{slot: c.next, keys: map[string]cachedEntry{}}
		c.recent[userKey] = r
		c.ring[c.next] = userKey
		c.next = (c.next + 1) % maxRecent
	}
	if old, ok := r.keys[key]; !ok || old.rev < e.rev {
		r.keys[key] = e
	}
}

// merge keeps e for key unless the user holds a newer revision. c.mu is
// held.
func (c *Cache) merge(u *cachedUser, key string, e cachedEntry) {
	old, had := u.keys[key]
	if had && old.rev >= e.rev {
		return
	}
	if had && !old.gone {
		c.subs--
	}
	if !e.gone {
		c.subs++
	}
	u.keys[key] = e
}

// Prefetch starts reading the users of keys that are not held, in the
// background; ForUser waits for a read in flight rather than starting
// another. Users whose read is in flight are held beyond the limit until
// it ends.
func (c *Cache) Prefetch(userKeys []string) {
	if missing := c.claim(userKeys); len(missing) > 0 {
		go c.read(missing)
	}
}

// ForUser returns the live subscriptions of the user key
// (events.Keyer.UserKey), sorted by app and device, reading them from the
// bucket when the user is not held. ctx bounds the wait for a read; the
// read itself goes on, for the next call.
func (c *Cache) ForUser(ctx context.Context, userKey string) ([]Subscription, error) {
	u, fresh := c.claimOne(userKey)
	if fresh {
		go c.read([]*cachedUser{u})
	}
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("reading the subscriptions of %s: %w", userKey, ctx.Err())
	case <-u.ready:
	}
	if u.err != nil {
		return nil, u.err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.users[userKey] == u {
		c.lru.MoveToFront(u.elem)
	}
	return c.live(u), nil
}

// live is what ForUser returns of u. c.mu is held.
func (c *Cache) live(u *cachedUser) []Subscription {
	now := c.store.now()
	out := make([]Subscription, 0, len(u.keys))
	for _, e := range u.keys {
		if !e.gone && (e.sub.ExpiresAt.IsZero() || now.Before(e.sub.ExpiresAt)) {
			out = append(out, e.sub)
		}
	}
	sortSubscriptions(out)
	return out
}

// claim adds a read in flight for each user of keys not held, dropping
// the least recently used users beyond the limit, and returns them.
func (c *Cache) claim(userKeys []string) []*cachedUser {
	c.mu.Lock()
	defer c.mu.Unlock()
	var missing []*cachedUser
	for _, k := range userKeys {
		if u, fresh := c.claimLocked(k); fresh {
			missing = append(missing, u)
		}
	}
	c.evict()
	return missing
}

// claimOne is claim for one user: its entry, and whether it is new.
func (c *Cache) claimOne(userKey string) (*cachedUser, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, fresh := c.claimLocked(userKey)
	c.evict()
	return u, fresh
}

// claimLocked returns the user's entry, adding one with a read in flight
// when it is not held. c.mu is held.
func (c *Cache) claimLocked(userKey string) (*cachedUser, bool) {
	if u := c.users[userKey]; u != nil {
		c.lru.MoveToFront(u.elem)
		return u, false
	}
	u := &cachedUser{key: userKey, keys: map[string]cachedEntry{}, ready: make(chan struct{})}
	u.elem = c.lru.PushFront(u)
	c.users[userKey] = u
	if r := c.recent[userKey]; r != nil {
		for key, e := range r.keys {
			c.merge(u, key, e)
		}
		delete(c.recent, userKey)
	}
	return u, true
}

// evict drops the least recently used users whose read has ended until at
// most maxUsers are held. c.mu is held.
func (c *Cache) evict() {
	for e := c.lru.Back(); e != nil && len(c.users) > c.maxUsers; {
		u := e.Value.(*cachedUser)
		e = e.Prev()
		select {
		case <-u.ready:
			c.drop(u)
		default: // a read in flight is kept
		}
	}
}

// drop forgets u. c.mu is held.
func (c *Cache) drop(u *cachedUser) {
	for _, e := range u.keys {
		if !e.gone {
			c.subs--
		}
	}
	c.lru.Remove(u.elem)
	delete(c.users, u.key)
}

// read reads the users claimed, loadBatch at a time, and ends their reads
// in flight.
func (c *Cache) read(users []*cachedUser) {
	for len(users) > 0 {
		n := min(len(users), loadBatch)
		c.reads <- struct{}{}
		err := c.readBatch(users[:n])
		<-c.reads
		c.mu.Lock()
		for _, u := range users[:n] {
			if err != nil {
				c.fail(u, err)
			}
			close(u.ready)
		}
		c.evict()
		c.mu.Unlock()
		users = users[n:]
	}
}

// fail ends u's read with err: the user is dropped, to be read again when
// next asked for, and what the watch told of it (all u holds, since a
// failed read merged nothing) is kept apart again, as for any user not
// held. c.mu is held; u's read has not ended.
func (c *Cache) fail(u *cachedUser, err error) {
	u.err = err
	if c.users[u.key] != u {
		return
	}
	c.drop(u)
	for key, e := range u.keys {
		c.remember(u.key, key, e)
	}
}

// readBatch reads the latest entry of every key of users, deletions
// included, in one batched direct get (Store.readLast), and merges them.
func (c *Cache) readBatch(users []*cachedUser) error {
	ctx, cancel := context.WithTimeout(c.ctx, readTimeout)
	defer cancel()
	userKeys := make([]string, len(users))
	for i, u := range users {
		userKeys[i] = u.key
	}
	entries, err := c.store.readLast(ctx, userKeys)
	if err != nil {
		return fmt.Errorf("reading subscriptions: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range entries {
		if u := c.users[e.user]; u != nil {
			c.merge(u, e.key, e.cached())
		}
	}
	return nil
}

// Forget drops the subscription stored under key at once, ahead of the
// watch, for a device just found gone. A later registration of the device
// (a newer revision) brings it back.
func (c *Cache) Forget(key string) {
	userKey, _, ok := cutLastDot(key)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.users[userKey]
	if u == nil {
		return
	}
	if e, ok := u.keys[key]; ok && !e.gone {
		c.subs--
		u.keys[key] = cachedEntry{rev: e.rev, gone: true}
	}
}

// Len is how many subscriptions the cache holds, expired ones included
// until the server removes them, and for how many users.
func (c *Cache) Len() (subscriptions, users int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs, len(c.users)
}
