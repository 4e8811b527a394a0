package subscriptions

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
)

// Namer tells the user and label of a device known only by its reference
// (DeviceRef), for pages that show references. It reads a tenant's
// subscriptions when a reference is new to it (at most once per
// minReload) or its names are older than maxAge. It is safe for concurrent
// use.
type Namer struct {
	store     *Store
	minReload time.Duration
	maxAge    time.Duration
	now       func() time.Time

	mu      sync.Mutex
	tenants map[string]*tenantNames
}

// tenantNames are the names of one tenant's devices by reference.
type tenantNames struct {
	byRef  map[string][2]string // ref → user, label
	loaded time.Time
}

// Namer returns a Namer over the store's subscriptions.
func (s *Store) Namer() *Namer {
	return &Namer{store: s, minReload: 2 * time.Second, maxAge: time.Minute, now: time.Now, tenants: map[string]*tenantNames{}}
}

// Name returns the user and label of the device ref of tenant, or empty
// strings when no subscription has that reference.
func (n *Namer) Name(ctx context.Context, tenant, ref string) (user, label string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.tenants[tenant]
	if t != nil && n.now().Sub(t.loaded) < n.maxAge {
		if names, ok := t.byRef[ref]; ok {
			return names[0], names[1]
		}
		if n.now().Sub(t.loaded) < n.minReload {
			return "", ""
		}
	}
	t = &tenantNames{byRef: map[string][2]string{}, loaded: n.now()}
	n.tenants[tenant] = t
	filter := events.TenantToken(strings.ToLower(tenant)) + ".>"
	subs, err := n.store.list(ctx, filter)
	if err != nil {
		return "", ""
	}
	for _, sub := range subs {
		t.byRef[DeviceRef(sub.AppID, sub.DeviceID)] = [2]string{sub.User, sub.Label}
	}
	names := t.byRef[ref]
	return names[0], names[1]
}
