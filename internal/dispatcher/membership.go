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

// deafAfter is how long, in heartbeats, a member may go without hearing
// its own before it announces itself deaf: its heartbeats come back within
// milliseconds, so one and a half missed is one lost, not a slow one.
const deafAfter = 1.5

// Announcement is a dispatcher's heartbeat on the membership subject
// (Config.MembershipSubject): its id, the partitions it consumes, whether
// it is leaving, and the encodings of stored values it reads. pushctl
// status reads it to list the workers, pushctl storage encoding to check
// that every dispatcher reads the encoding it switches to.
type Announcement struct {
	ID      string `json:"id"`
	Leaving bool   `json:"leaving,omitempty"`
	Owns    []int  `json:"owns,omitempty"`
	// Deaf says that the dispatcher has not heard its own heartbeats for
	// more than deafAfter of them: what NATS sends it does not arrive
	// (its connection is cut one way), so it pushes nothing. The others
	// do not count such a heartbeat as a sign of life, and take its
	// partitions after memberTimeoutBeats, instead of waiting until its
	// client gives the connection up (4 to 6 s more).
	Deaf bool `json:"deaf,omitempty"`
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
	// heardSelf) and in the cluster's confirmations (see confirmed);
	// gaps is signalled at each.
	epoch uint64
	gaps  chan struct{}
	// beacon, when set, is a write the cluster's majority must confirm
	// (see confirm). quorumSent is when the latest write it confirmed was
	// sent, quorumAcked when the last confirmation came; zero before the
	// first.
	beacon                  func(context.Context) error
	quorumSent, quorumAcked time.Time
	// lastGap is when the last gap was found.
	lastGap time.Time
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
	live := !a.Leaving && !a.Deaf
	switch {
	case a.Leaving:
		delete(m.seen, a.ID)
		delete(m.claims, a.ID)
	case a.Deaf:
		// Not a sign of life: it counts as silent and is forgotten when
		// its last full heartbeat times out.
		if known {
			m.claims[a.ID] = a.Owns
		}
	default:
		m.seen[a.ID] = time.Now()
		m.claims[a.ID] = a.Owns
	}
	m.mu.Unlock()
	if a.Leaving || (live && !known) {
		m.signal()
	}
	if live && !known {
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
		m.gapLocked(now)
	}
	m.self = now
}

// confirmed records that a beacon, or a state write, sent at sent was
// stored by the cluster's majority: this member's server reached the
// others at some moment between then and now. (Under load the state
// writes keep a member confirmed when the beacon's bucket has no leader
// for a while.) A gap between two confirmations longer than the others'
// timeout is a gap as in heardSelf: a member cut off with its own server
// (a node cut off from the others, its clients still reaching it) hears
// itself all along, but the others, on the majority's side, may have
// counted it gone and taken its partitions meanwhile. Gaps are measured
// between arrivals, not sendings: writes sent during a cut may all be
// stored at its end, by a leader nobody replaced, and their sending
// times would show no gap.
func (m *membership) confirmed(sent time.Time) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.quorumAcked.IsZero() && now.Sub(m.quorumAcked) > memberTimeoutBeats*m.interval {
		m.gapLocked(now)
	}
	m.quorumAcked = now
	if sent.After(m.quorumSent) {
		m.quorumSent = sent
	}
}

// gapLocked restarts the view after a gap, from now, and starts a new
// epoch: what the workers hold from before must not be pushed (see
// current). A gap found within an interval of the last one is the same
// outage seen the other way (heartbeats, confirmations): the workers of
// the new epoch started after it. m.mu is held.
func (m *membership) gapLocked(now time.Time) {
	if !m.lastGap.IsZero() && now.Sub(m.lastGap) < m.interval {
		return
	}
	m.lastGap = now
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

// hearsItselfLocked reports whether this member heard its own heartbeat
// within two intervals, and had a beacon sent within two intervals
// confirmed by the cluster (when it has one): no other member can have
// counted it gone (that takes memberTimeoutBeats of silence). m.mu is
// held.
func (m *membership) hearsItselfLocked(now time.Time) bool {
	return now.Sub(m.self) <= 2*m.interval && m.confirmedLocked(now, 2*m.interval)
}

// confirmedLocked reports whether a write sent within d of now was
// confirmed, or whether this member has no beacon. m.mu is held.
func (m *membership) confirmedLocked(now time.Time, d time.Duration) bool {
	return m.beacon == nil || (!m.quorumSent.IsZero() && now.Sub(m.quorumSent) <= d)
}

// current returns this member's epoch, and whether it hears itself (see
// hearsItselfLocked). A push may be sent only while the member hears
// itself and by a worker started in the current epoch.
func (m *membership) current() (epoch uint64, live bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epoch, m.hearsItselfLocked(time.Now())
}

// stable reports whether this member has heard its own heartbeats (and
// had its beacons confirmed) long enough without a gap that the others'
// would have been heard too: only then does a partition nobody announces
// belong to a dispatcher that is gone, rather than to one whose
// heartbeats have not come back yet.
func (m *membership) stable() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	return m.hearsItselfLocked(now) && now.Sub(m.connected) > (memberTimeoutBeats+1)*m.interval
}

// confirm sends a beacon at once and then every interval until ctx ends,
// each bounded by the others' timeout, and records those the cluster
// confirms. It logs when the confirmations stop and when they come back.
func (m *membership) confirm(ctx context.Context) {
	failing := false
	send := func() {
		sent := time.Now()
		bctx, cancel := context.WithTimeout(ctx, memberTimeoutBeats*m.interval)
		err := m.beacon(bctx)
		cancel()
		switch {
		case err == nil:
			m.confirmed(sent)
			if failing {
				failing = false
				m.log.Info().Msg("the cluster confirms this dispatcher's writes again")
			}
		case ctx.Err() == nil && !failing:
			failing = true
			m.log.Warn().Err(err).Msg("the cluster does not confirm this dispatcher's writes: it pushes nothing until it does (cut off from the majority of the NATS servers?)")
		}
	}
	send()
	service.Every(ctx, m.interval, send)
}

// beat announces this member and forgets the silent ones every interval
// until ctx ends. It has a goroutine of its own: a dispatcher whose loop
// waits on slow requests (NATS just came back, reads time out) must not
// fall silent, or the others count it gone and take the partitions it is
// still applying.
func (m *membership) beat(ctx context.Context) { service.Every(ctx, m.interval, m.tick) }

// tick announces this member and forgets the silent ones, unless this
// member cannot hear itself either, or the cluster has not confirmed its
// beacons for as long (then NATS, or this member's way to the majority,
// is down, not the others).
func (m *membership) tick() {
	m.announce(false)
	now := time.Now()
	cutoff := now.Add(-memberTimeoutBeats * m.interval)
	m.mu.Lock()
	if m.self.Before(cutoff) || !m.confirmedLocked(now, memberTimeoutBeats*m.interval) {
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

// announce publishes this member's heartbeat: deaf when it has not heard
// its own for deafAfter heartbeats.
func (m *membership) announce(leaving bool) {
	m.mu.Lock()
	deaf := time.Since(m.self) > time.Duration(deafAfter*float64(m.interval))
	a := Announcement{ID: m.id, Leaving: leaving, Owns: slices.Clone(m.owns), Reads: storage.Reads(), Deaf: deaf && !leaving}
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
