package delivery

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults of BreakerConfig.
const (
	DefaultAppFaults      = 3
	DefaultAppCooldown    = 15 * time.Second
	DefaultAppMaxCooldown = 5 * time.Minute
)

// BreakerConfig tunes the tenant+app breakers. Zero fields take the
// defaults.
type BreakerConfig struct {
	// Faults is how many pushes in a row that reached no device of an
	// app, each with an app fault, open the tenant+app breaker.
	Faults int
	// Cooldown is how long it first stays open before a trial push; it
	// doubles each time a trial fails, up to MaxCooldown.
	Cooldown    time.Duration
	MaxCooldown time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// OnChange, when set, is called (without locks held) when a breaker
	// opens or closes, with the last fault's reason.
	OnChange func(tenant, appID string, open bool, reason string)
}

// Breakers are the app-fault breakers, one per tenant+app: an app fault of
// one tenant's app pauses only that tenant+app. Safe for concurrent use.
type Breakers struct {
	cfg BreakerConfig

	mu sync.Mutex
	m  map[appKey]*appBreaker
}

type appKey struct{ tenant, app string }

type appBreaker struct {
	faults    int
	open      bool
	openUntil time.Time
	trialAt   time.Time // a trial push is in flight since then
	opens     int
	reason    string
}

// NewBreakers returns closed breakers.
func NewBreakers(cfg BreakerConfig) *Breakers {
	if cfg.Faults <= 0 {
		cfg.Faults = DefaultAppFaults
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = DefaultAppCooldown
	}
	if cfg.MaxCooldown <= 0 {
		cfg.MaxCooldown = DefaultAppMaxCooldown
	}
	cfg.MaxCooldown = max(cfg.MaxCooldown, cfg.Cooldown)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Breakers{cfg: cfg, m: map[appKey]*appBreaker{}}
}

// Allow reports whether a push to tenant's app may be sent now. While the
// breaker is open it says no and until when; after the cool-down it lets
// one trial push through (trial true) and holds the others until the
// trial's outcome is reported with Delivered or Fault (or a cool-down
// passes without one).
func (b *Breakers) Allow(tenant, appID string) (ok, trial bool, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	br := b.m[appKey{tenant, appID}]
	if br == nil || !br.open {
		return true, false, time.Time{}
	}
	now := b.cfg.Now()
	if now.Before(br.openUntil) {
		return false, false, br.openUntil
	}
	if !br.trialAt.IsZero() && now.Sub(br.trialAt) < b.cfg.Cooldown {
		return false, false, br.trialAt.Add(b.cfg.Cooldown)
	}
	br.trialAt = now
	return true, true, time.Time{}
}

// Delivered records that a push reached a device of tenant's app: the
// app works, and its breaker closes.
func (b *Breakers) Delivered(tenant, appID string) {
	b.mu.Lock()
	k := appKey{tenant, appID}
	br := b.m[k]
	if br == nil {
		b.mu.Unlock()
		return
	}
	wasOpen := br.open
	delete(b.m, k)
	b.mu.Unlock()
	if wasOpen && b.cfg.OnChange != nil {
		b.cfg.OnChange(tenant, appID, false, "")
	}
}

// Fault records a push that reached no device of tenant's app because of
// an app fault; enough of them in a row open the breaker, and a failed
// trial opens it again for longer.
func (b *Breakers) Fault(tenant, appID, reason string) {
	b.mu.Lock()
	k := appKey{tenant, appID}
	br := b.m[k]
	if br == nil {
		br = &appBreaker{}
		b.m[k] = br
	}
	br.reason = reason
	opened := false
	switch {
	case br.open && !br.trialAt.IsZero():
		br.trialAt = time.Time{}
		b.trip(br)
	case !br.open:
		br.faults++
		if br.faults >= b.cfg.Faults {
			b.trip(br)
			opened = true
		}
	}
	b.mu.Unlock()
	if opened && b.cfg.OnChange != nil {
		b.cfg.OnChange(tenant, appID, true, reason)
	}
}

// trip opens br for the next cool-down; mu must be held.
func (b *Breakers) trip(br *appBreaker) {
	wait := b.cfg.Cooldown
	for i := 0; i < br.opens && wait < b.cfg.MaxCooldown; i++ {
		wait *= 2
	}
	br.open, br.openUntil, br.faults = true, b.cfg.Now().Add(min(wait, b.cfg.MaxCooldown)), 0
	br.opens++
}

// Paused is an open tenant+app breaker.
type Paused struct {
	Tenant, AppID string
	// Until is when a trial push may go.
	Until time.Time
	// Reason is the last app fault.
	Reason string
}

// Paused lists the open breakers, by tenant and app.
func (b *Breakers) Paused() []Paused {
	b.mu.Lock()
	var out []Paused
	for k, br := range b.m {
		if br.open {
			out = append(out, Paused{Tenant: k.tenant, AppID: k.app, Until: br.openUntil, Reason: br.reason})
		}
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(a, b Paused) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		return strings.Compare(a.AppID, b.AppID)
	})
	return out
}
