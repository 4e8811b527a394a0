// Package logpush is a built-in provider that delivers badges nowhere: it
// logs each one and keeps the latest badge of every device in memory, for
// the standalone mode's web page, which lists devices with their badge and
// follows changes live through Subscribe.
package logpush

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/providers"
)

// Name is the provider's name.
const Name = "log"

// DefaultMaxDevices is the default of Config.MaxDevices.
const DefaultMaxDevices = 10000

// ErrClosed is returned by Subscription.Next after Close.
var ErrClosed = errors.New("logpush: subscription closed")

// Config configures the logging provider.
type Config struct {
	// MaxDevices bounds how many devices are remembered; beyond it the
	// device updated least recently is forgotten. Default 10000.
	MaxDevices int
}

// Entry is the latest badge of one device.
type Entry struct {
	// Badge is the badge as sent. Badge.Device may hold secrets (Web Push
	// keys); show Ref instead.
	Badge providers.Badge
	// Ref is Badge.Ref(), safe to show and log.
	Ref string
	// Updated is when the badge was sent.
	Updated time.Time
}

// key identifies a device.
type key struct{ appID, device string }

// Provider logs badges and remembers the latest per device. It is safe for
// concurrent use.
type Provider struct {
	max int
	log zerolog.Logger
	now func() time.Time

	mu      sync.Mutex
	faults  map[string]Fault      // by appId: drills set by Fail
	entries map[key]*list.Element // values are Entry; front = most recent
	order   *list.List
	subs    map[*Subscription]struct{}
}

var _ providers.Provider = (*Provider)(nil)

// New returns a Provider.
func New(cfg Config, opts ...providers.Option) *Provider {
	o := providers.Apply(opts)
	if cfg.MaxDevices <= 0 {
		cfg.MaxDevices = DefaultMaxDevices
	}
	return &Provider{
		max:     cfg.MaxDevices,
		log:     o.Log,
		now:     time.Now,
		entries: make(map[key]*list.Element),
		order:   list.New(),
		subs:    make(map[*Subscription]struct{}),
	}
}

// Name returns "log".
func (p *Provider) Name() string { return Name }

// Fault is a failure Fail makes the provider answer, as a push service
// would: an HTTP status and reason, classified by the answer table.
type Fault struct {
	Status int
	Reason string
	// GoneSince is the verdict time of a device-gone fault (zero: none).
	GoneSince time.Time
}

// Drills of Fail: what a real push service answers for each class.
var (
	// FaultAppCredentials is a credential fault (like APNs 403
	// InvalidProviderToken).
	FaultAppCredentials = Fault{Status: 403, Reason: "InvalidProviderToken"}
	// FaultDeviceGone is a dead device (like APNs 410 Unregistered).
	FaultDeviceGone = Fault{Status: 410, Reason: "Unregistered"}
	// FaultUnavailable is a push service outage (503).
	FaultUnavailable = Fault{Status: 503, Reason: "ServiceUnavailable"}
)

// answers maps the provider's answers to fault classes; the first row
// that matches wins. Each row has a case in TestAnswers.
var answers = []providers.Rule{
	{Reason: "Canceled", Class: providers.Transient}, // the relay gave up on the send
	{Status: 410, Class: providers.DeviceGone},
	{Status: 401, StatusTo: 403, Class: providers.AppFault},
	{Status: 429, Class: providers.Transient},
	{Status: 500, StatusTo: 599, Class: providers.Transient},
}

// Fail makes every later Send to appID's devices fail with f until Heal:
// a drill of a push service fault for tests and for operators trying the
// fault classes end to end.
func (p *Provider) Fail(appID string, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.faults == nil {
		p.faults = map[string]Fault{}
	}
	p.faults[appID] = f
}

// Heal ends the drill Fail started for appID.
func (p *Provider) Heal(appID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.faults, appID)
}

// fault returns the error of a drill for appID, or nil.
func (p *Provider) fault(appID string) error {
	p.mu.Lock()
	f, ok := p.faults[appID]
	p.mu.Unlock()
	if !ok {
		return nil
	}
	e := &providers.Error{Provider: Name, Status: f.Status, Reason: f.Reason, GoneSince: f.GoneSince}
	return e.SetClass(providers.Classify(answers, f.Status, f.Reason).Class)
}

// Send logs b, records it as the device's latest badge and tells
// subscribers. It fails if ctx is done, or as a drill set by Fail says.
func (p *Provider) Send(ctx context.Context, b providers.Badge) error {
	if err := ctx.Err(); err != nil {
		e := &providers.Error{Provider: Name, Reason: "Canceled", Err: err}
		return e.SetClass(providers.Classify(answers, 0, e.Reason).Class)
	}
	if err := p.fault(b.AppID); err != nil {
		return err
	}
	b.Count = max(b.Count, 0)
	e := Entry{Badge: b, Ref: b.Ref(), Updated: p.now()}
	p.log.Info().
		Str("provider", Name).
		Str("tenant", b.Tenant).
		Str("app_id", b.AppID).
		Str("device", e.Ref).
		Int("count", b.Count).
		Bool("background_sync", b.BackgroundSync).
		Str("language", b.Language).
		Str("id", b.ID).
		Msg("badge")

	k := key{b.AppID, b.Device}
	p.mu.Lock()
	defer p.mu.Unlock()
	if el, ok := p.entries[k]; ok {
		el.Value = e
		p.order.MoveToFront(el)
	} else {
		p.entries[k] = p.order.PushFront(e)
		for p.order.Len() > p.max {
			old := p.order.Remove(p.order.Back()).(Entry)
			delete(p.entries, key{old.Badge.AppID, old.Badge.Device})
		}
	}
	for s := range p.subs {
		s.add(k, e)
	}
	return nil
}

// Devices returns the latest badge of every remembered device, most
// recently updated first.
func (p *Provider) Devices() []Entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Entry, 0, p.order.Len())
	for el := p.order.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(Entry))
	}
	return out
}

// Latest returns the latest badge of one device.
func (p *Provider) Latest(appID, device string) (Entry, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	el, ok := p.entries[key{appID, device}]
	if !ok {
		return Entry{}, false
	}
	return el.Value.(Entry), true
}

// Subscribe returns a subscription to badge updates from now on. Take a
// snapshot with Devices after subscribing to miss nothing; Close the
// subscription when done.
func (p *Provider) Subscribe() *Subscription {
	s := &Subscription{p: p, pending: make(map[key]Entry), ready: make(chan struct{}, 1)}
	p.mu.Lock()
	p.subs[s] = struct{}{}
	p.mu.Unlock()
	return s
}

// Subscription receives badge updates. Updates a slow reader has not taken
// yet are coalesced per device, so it never blocks Send, holds at most one
// pending entry per device (and at most MaxDevices), and always ends up with
// each device's latest badge.
type Subscription struct {
	p     *Provider
	ready chan struct{} // has a token when pending is not empty or closed

	// guarded by p.mu
	pending map[key]Entry
	order   []key
	closed  bool
}

// add queues e; p.mu is held. Like the provider, it keeps at most
// MaxDevices devices, dropping the oldest update.
func (s *Subscription) add(k key, e Entry) {
	if _, ok := s.pending[k]; !ok {
		if len(s.order) >= s.p.max {
			delete(s.pending, s.order[0])
			s.order = s.order[1:]
		}
		s.order = append(s.order, k)
	}
	s.pending[k] = e
	s.signal()
}

func (s *Subscription) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Next waits for updates and returns them, oldest first, at most one per
// device (its latest). It returns ctx's error when ctx is done first, and
// ErrClosed after Close.
func (s *Subscription) Next(ctx context.Context) ([]Entry, error) {
	for {
		s.p.mu.Lock()
		if s.closed {
			s.p.mu.Unlock()
			return nil, ErrClosed
		}
		if len(s.order) > 0 {
			out := make([]Entry, len(s.order))
			for i, k := range s.order {
				out[i] = s.pending[k]
			}
			clear(s.pending)
			s.order = s.order[:0]
			s.p.mu.Unlock()
			return out, nil
		}
		s.p.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ready:
		}
	}
}

// Close ends the subscription; a waiting Next returns ErrClosed.
func (s *Subscription) Close() {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	delete(s.p.subs, s)
	clear(s.pending)
	s.order = nil
	s.signal()
}
