package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/storage"
)

// memberTimeoutBeats is how many heartbeats a member may miss before the
// others count it gone.
const memberTimeoutBeats = 3

// Announcement is a dispatcher's heartbeat on the membership subject
// (Config.MembershipSubject): its id, the partitions it consumes, whether
// it is leaving, and the encodings of stored values it reads. pushctl
// status reads it to list the workers, pushctl storage encoding to check
// that every dispatcher reads the encoding it switches to.
type Announcement struct {
	ID      string `json:"id"`
	Leaving bool   `json:"leaving,omitempty"`
	Owns    []int  `json:"owns,omitempty"`
	// Reads are the encodings of the unread and subscriptions buckets the
	// dispatcher reads (storage.Reads); empty for a release before the
	// compact encoding, which reads only JSON.
	Reads []storage.Encoding `json:"reads,omitempty"`
}

// membership tracks the live dispatchers from their heartbeats on a core
// NATS subject. Every dispatcher runs the same Assign over the same live
// set, so they agree on who consumes which partition without a
// coordinator. Views may differ for a heartbeat or two (a member just
// started or stopped); the pinned consumers keep a partition with one
// dispatcher at a time meanwhile.
type membership struct {
	nc       *nats.Conn
	subject  string
	id       string
	interval time.Duration
	log      zerolog.Logger

	mu   sync.Mutex
	seen map[string]time.Time
	// self is when this member last heard its own heartbeat, connected
	// since when it has heard them without a gap.
	self, connected time.Time
	// epoch counts the gaps in this member's own heartbeats (see
	// heardSelf); gaps is signalled at each.
	epoch uint64
	gaps  chan struct{}
	// claims are the partitions each other live member last announced.
	claims  map[string][]int
	owns    []int
	changed chan struct{}
	sub     *nats.Subscription
}

func newMembership(nc *nats.Conn, subject, id string, interval time.Duration, log zerolog.Logger) *membership {
	return &membership{nc: nc, subject: subject, id: id, interval: interval, log: log,
		seen: map[string]time.Time{id: time.Now()}, claims: map[string][]int{}, changed: make(chan struct{}, 1), gaps: make(chan struct{}, 1),
		self: time.Now(), connected: time.Now()}
}

// start subscribes and announces this member.
func (m *membership) start() error {
	sub, err := m.nc.Subscribe(m.subject, m.receive)
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", m.subject, err)
	}
	m.sub = sub
	m.announce(false)
	return nil
}

func (m *membership) receive(msg *nats.Msg) {
	var a Announcement
	if err := json.Unmarshal(msg.Data, &a); err != nil || a.ID == "" {
		return
	}
	if a.ID == m.id {
		m.heardSelf()
		return
	}
	m.mu.Lock()
	_, known := m.seen[a.ID]
	if a.Leaving {
		delete(m.seen, a.ID)
		delete(m.claims, a.ID)
	} else {
		m.seen[a.ID] = time.Now()
		m.claims[a.ID] = a.Owns
	}
	m.mu.Unlock()
	if a.Leaving || !known {
		m.signal()
	}
	if !known && !a.Leaving {
		// Answer a newcomer at once so it learns the members quickly.
		m.announce(false)
	}
}

// heardSelf records this member's own heartbeat coming back: the
// connection to NATS works. After a gap (NATS down, the connection lost,
// or this process stopped) the view restarts from then: the others were
// silent because nobody's heartbeats flowed, not because they died. A gap
// also starts a new epoch: the others may have counted this member gone
// and taken its partitions meanwhile, so what its workers hold from before
// must not be pushed (see current).
func (m *membership) heardSelf() {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.self) > memberTimeoutBeats*m.interval {
		m.connected = now
		for id := range m.seen {
			m.seen[id] = now
		}
		m.epoch++
		select {
		case m.gaps <- struct{}{}:
		default:
		}
	}
	m.self = now
}

// hearsItselfLocked reports whether this member heard its own heartbeat
// within two intervals: no other member can have counted it gone (that
// takes memberTimeoutBeats of silence). m.mu is held.
func (m *membership) hearsItselfLocked(now time.Time) bool {
	return now.Sub(m.self) <= 2*m.interval
}

// current returns this member's epoch, and whether it hears itself (see
// hearsItselfLocked). A push may be sent only while the member hears
// itself and by a worker started in the current epoch.
func (m *membership) current() (epoch uint64, live bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epoch, m.hearsItselfLocked(time.Now())
}

// stable reports whether this member has heard its own heartbeats long
// enough (without a gap) that the others' would have been heard too: only
// then does a partition nobody announces belong to a dispatcher that is
// gone, rather than to one whose heartbeats have not come back yet.
func (m *membership) stable() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	return m.hearsItselfLocked(now) && now.Sub(m.connected) > (memberTimeoutBeats+1)*m.interval
}

// beat announces this member and forgets the silent ones every interval
// until ctx ends. It has a goroutine of its own: a dispatcher whose loop
// waits on slow requests (NATS just came back, reads time out) must not
// fall silent, or the others count it gone and take the partitions it is
// still applying.
func (m *membership) beat(ctx context.Context) { service.Every(ctx, m.interval, m.tick) }

// tick announces this member and forgets the silent ones, unless this
// member cannot hear itself either (then NATS, not the others, is down).
func (m *membership) tick() {
	m.announce(false)
	cutoff := time.Now().Add(-memberTimeoutBeats * m.interval)
	m.mu.Lock()
	if m.self.Before(cutoff) {
		m.mu.Unlock()
		return
	}
	gone := false
	for id, at := range m.seen {
		if id != m.id && at.Before(cutoff) {
			delete(m.seen, id)
			delete(m.claims, id)
			gone = true
		}
	}
	m.mu.Unlock()
	if gone {
		m.signal()
	}
}

func (m *membership) announce(leaving bool) {
	m.mu.Lock()
	a := Announcement{ID: m.id, Leaving: leaving, Owns: slices.Clone(m.owns), Reads: storage.Reads()}
	m.mu.Unlock()
	data, _ := json.Marshal(a)
	if err := m.nc.Publish(m.subject, data); err != nil {
		m.log.Debug().Err(err).Msg("announcing dispatcher")
	}
}

// claimedByOther reports whether another live member announced that it
// consumes partition p (it has a worker for it, perhaps handing it over).
func (m *membership) claimedByOther(p int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, owns := range m.claims {
		if id != m.id && slices.Contains(owns, p) {
			return true
		}
	}
	return false
}

// setOwned records the partitions this member consumes, for announcements:
// those it has a worker for, including workers still handing over, so that
// no other member takes the pin from them.
func (m *membership) setOwned(p []int) {
	m.mu.Lock()
	m.owns = slices.Clone(p)
	m.mu.Unlock()
}

// leave tells the others this member is going and stops listening.
func (m *membership) leave() {
	if m.sub != nil {
		_ = m.sub.Unsubscribe()
	}
	m.announce(true)
	_ = m.nc.Flush()
}

func (m *membership) signal() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// members returns the live members, sorted.
func (m *membership) members() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.seen))
	for id := range m.seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Assign shares partitions 0..partitions-1 among members: each partition
// goes to the member that ranks it highest (rendezvous hashing), unless
// that member already has its fair share (partitions/members, rounded up),
// in which case the next one in its ranking takes it. Every member computes
// the same answer from the same set, and adding or removing one member
// moves few partitions.
func Assign(partitions int, members []string) map[int]string {
	out := make(map[int]string, partitions)
	if len(members) == 0 {
		return out
	}
	ms := slices.Clone(members)
	sort.Strings(ms)
	ms = slices.Compact(ms)
	share := (partitions + len(ms) - 1) / len(ms)
	load := make(map[string]int, len(ms))
	for p := range partitions {
		ranked := slices.Clone(ms)
		sort.SliceStable(ranked, func(i, j int) bool { return rendezvous(ranked[i], p) > rendezvous(ranked[j], p) })
		for _, m := range ranked {
			if load[m] < share {
				out[p] = m
				load[m]++
				break
			}
		}
	}
	return out
}

func rendezvous(member string, partition int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", member, partition)
	// splitmix64's finalizer spreads FNV's similar hashes of similar names.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// owned lists the partitions Assign gives to id.
func owned(assignment map[int]string, id string) []int {
	var out []int
	for p, m := range assignment {
		if m == id {
			out = append(out, p)
		}
	}
	sort.Ints(out)
	return out
}
