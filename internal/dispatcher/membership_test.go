package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

func TestAssign(t *testing.T) {
	for _, tt := range []struct{ partitions, members int }{{8, 1}, {8, 3}, {8, 8}, {8, 11}, {64, 5}, {1, 2}} {
		t.Run(fmt.Sprintf("%d partitions, %d members", tt.partitions, tt.members), func(t *testing.T) {
			var ms []string
			for i := range tt.members {
				ms = append(ms, fmt.Sprintf("dispatcher-%d", i))
			}
			a := Assign(tt.partitions, ms)
			if len(a) != tt.partitions {
				t.Fatalf("%d partitions assigned, want %d", len(a), tt.partitions)
			}
			share := (tt.partitions + tt.members - 1) / tt.members
			load := map[string]int{}
			for _, m := range a {
				load[m]++
			}
			for m, n := range load {
				if n > share {
					t.Errorf("%s has %d partitions, more than its share %d", m, n, share)
				}
			}
			// Every member computes the same answer whatever the order.
			rev := make([]string, len(ms))
			for i, m := range ms {
				rev[len(ms)-1-i] = m
			}
			b := Assign(tt.partitions, rev)
			for p := range tt.partitions {
				if a[p] != b[p] {
					t.Fatalf("partition %d: %s or %s depending on the order of members", p, a[p], b[p])
				}
			}
		})
	}
}

func TestAssignMovesFewPartitions(t *testing.T) {
	ms := []string{"a", "b", "c", "d"}
	before := Assign(64, ms)
	after := Assign(64, append(ms, "e"))
	moved := 0
	for p := range 64 {
		if before[p] != after[p] {
			moved++
		}
	}
	// The newcomer takes about a fifth; a few more may move to rebalance.
	if moved > 64/2 {
		t.Fatalf("adding a fifth member moved %d of 64 partitions", moved)
	}
	if got := owned(after, "e"); len(got) == 0 {
		t.Fatal("the newcomer got nothing")
	}
}

func TestAssignNobody(t *testing.T) {
	if a := Assign(8, nil); len(a) != 0 {
		t.Fatalf("Assign with no members = %v", a)
	}
}

// TestMembershipAfterAnOutage checks that a member that could not hear its
// own heartbeats (NATS down) does not count the others gone, and that its
// view only counts as stable once it has heard itself again for longer
// than the others' timeout.
func TestMembershipAfterAnOutage(t *testing.T) {
	const beat = 10 * time.Millisecond
	m := newMembership(nil, "members", "a", beat, zerolog.Nop())
	now := time.Now()
	m.seen["b"] = now.Add(-time.Hour) // silent for long...
	m.self = now.Add(-time.Hour)      // ...but so was this member itself
	m.connected = now.Add(-2 * time.Hour)
	if m.stable() {
		t.Fatal("a member that cannot hear itself counts its view as stable")
	}
	m.heardSelf() // NATS is back
	if _, ok := m.seen["b"]; !ok || now.Sub(m.seen["b"]) > time.Minute {
		t.Fatalf("after the outage b was not given a fresh start: %v", m.seen["b"])
	}
	if m.stable() {
		t.Fatal("the view counts as stable right after the outage")
	}
	m.connected = time.Now().Add(-(memberTimeoutBeats + 2) * beat)
	m.heardSelf()
	if !m.stable() {
		t.Fatal("the view is not stable after hearing itself for longer than the timeout")
	}
}

// TestMembershipFencedByTheCluster: a member that hears its own
// heartbeats but whose beacons the cluster does not confirm (its server
// cut off from the others, its clients still reaching it) may not push,
// forgets nobody, and starts a new epoch when confirmations come back
// after longer than the others' timeout; a beacon answered late moves
// nothing back.
func TestMembershipFencedByTheCluster(t *testing.T) {
	const beat = 10 * time.Millisecond
	conn := brokertest.Start(t)
	m := newMembership(conn.NC, "members", "a", beat, zerolog.Nop())
	m.beacon = func(context.Context) error { return nil }
	m.heardSelf()
	if _, live := m.current(); live {
		t.Fatal("live before the cluster confirmed a beacon")
	}
	m.confirmed(time.Now())
	before, live := m.current()
	if !live {
		t.Fatal("not live with a beacon just confirmed")
	}

	// Cut off: the member hears itself, the cluster confirms nothing.
	now := time.Now()
	m.mu.Lock()
	m.self = now
	m.quorumSent = now.Add(-(memberTimeoutBeats + 1) * beat)
	m.quorumAcked = m.quorumSent
	m.seen["b"] = now.Add(-time.Hour)
	m.connected = now.Add(-time.Hour)
	m.mu.Unlock()
	if _, live := m.current(); live {
		t.Fatal("live while the cluster confirms nothing")
	}
	if m.stable() {
		t.Fatal("stable while the cluster confirms nothing")
	}
	m.tick()
	if !slices.Contains(m.members(), "b") {
		t.Fatal("forgot b while it could not tell whether b or itself was cut off")
	}

	m.confirmed(time.Now()) // healed
	after, live := m.current()
	if !live || after != before+1 {
		t.Fatalf("after the heal: epoch %d (was %d), live %v; want a new epoch, live", after, before, live)
	}
	select {
	case <-m.gaps:
	default:
		t.Fatal("the gap in confirmations was not signalled")
	}
	if seen := m.seen["b"]; time.Since(seen) > time.Minute {
		t.Fatalf("b was not given a fresh start after the gap: %v", seen)
	}
	m.confirmed(now.Add(-time.Hour)) // a write answered late, right after
	if e, live := m.current(); !live || e != after {
		t.Fatalf("a late answer right after a confirmation changed the view: epoch %d, live %v", e, live)
	}

	// Writes sent during a cut, all stored at its end: the arrivals show
	// the gap their sendings do not.
	m.mu.Lock()
	m.quorumAcked = time.Now().Add(-(memberTimeoutBeats + 1) * beat)
	m.lastGap = m.quorumAcked // long ago: another outage
	m.mu.Unlock()
	m.confirmed(time.Now().Add(-beat))
	if e, _ := m.current(); e != after+1 {
		t.Fatalf("epoch %d after confirmations that came after a gap, want %d", e, after+1)
	}
}

// TestMembershipConfirmLoop runs confirm against a beacon that fails,
// then succeeds: the member is live only once the cluster confirms.
func TestMembershipConfirmLoop(t *testing.T) {
	const beat = 10 * time.Millisecond
	m := newMembership(nil, "members", "a", beat, zerolog.Nop())
	var works atomic.Bool
	m.beacon = func(context.Context) error {
		if works.Load() {
			return nil
		}
		return errors.New("nats: timeout")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.confirm(ctx) }()
	defer func() { cancel(); <-done }()
	keepHearing := func() bool {
		m.heardSelf()
		_, live := m.current()
		return live
	}
	for range 20 {
		if keepHearing() {
			t.Fatal("live while every beacon fails")
		}
		time.Sleep(beat / 2)
	}
	works.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for !keepHearing() {
		if time.Now().After(deadline) {
			t.Fatal("not live after the beacons went through")
		}
		time.Sleep(beat / 2)
	}
}

// TestMembershipOneOutageOneEpoch: an outage seen on both paths, the own
// heartbeats and the cluster's confirmations, starts one epoch, not two
// (each would drop the workers started after the other).
func TestMembershipOneOutageOneEpoch(t *testing.T) {
	const beat = time.Second // long enough that both findings fall within one
	m := newMembership(nil, "members", "a", beat, zerolog.Nop())
	m.beacon = func(context.Context) error { return nil }
	m.confirmed(time.Now())
	before, _ := m.current()
	m.mu.Lock()
	m.self = time.Now().Add(-time.Hour)
	m.quorumAcked = time.Now().Add(-time.Hour)
	m.mu.Unlock()
	m.heardSelf()
	m.confirmed(time.Now())
	if after, live := m.current(); after != before+1 || !live {
		t.Fatalf("epoch %d after one outage (was %d), live %v; want one new epoch", after, before, live)
	}
}

// TestMembershipDeafIsNotALiveSign cuts what NATS sends one member (its
// own heartbeats included) while what it sends still goes out, as a
// network that fails one way does: it announces itself deaf, may not
// push, and the other member counts it gone after its timeout, as if it
// were silent, instead of while its client still holds the connection
// (minutes here: the client's pings are the library's default). Once it
// hears again, it is live again and counted again.
func TestMembershipDeafIsNotALiveSign(t *testing.T) {
	const beat = 20 * time.Millisecond
	conn := brokertest.Start(t, brokertest.WithListen())
	proxy := brokertest.StartProxy(t, conn.ClientURL())
	ncB, err := nats.Connect(proxy.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer ncB.Close()

	// Count b's heartbeats as the server gets them.
	var fromB, deafFromB atomic.Int32
	sub, err := conn.NC.Subscribe("members", func(msg *nats.Msg) {
		var an Announcement
		if json.Unmarshal(msg.Data, &an) == nil && an.ID == "b" {
			fromB.Add(1)
			if an.Deaf {
				deafFromB.Add(1)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer func() { cancel(); running.Wait() }()
	a := newMembership(conn.NC, "members", "a", beat, zerolog.Nop())
	b := newMembership(ncB, "members", "b", beat, zerolog.Nop())
	for _, m := range []*membership{a, b} {
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		running.Go(func() { m.beat(ctx) })
	}
	within := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !cond(); time.Sleep(beat / 4) {
			if time.Now().After(deadline) {
				t.Fatalf("not within %s: %s", d, what)
			}
		}
	}
	aCountsB := func() bool { return slices.Contains(a.members(), "b") }
	bLive := func() bool { _, live := b.current(); return live }
	within("a counts b", 5*time.Second, aCountsB)

	proxy.Freeze()
	sent := fromB.Load()
	within("a counts b gone", 50*beat, func() bool { return !aCountsB() })
	if bLive() {
		t.Fatal("b is live while it hears nothing")
	}
	if fromB.Load() <= sent || deafFromB.Load() == 0 {
		t.Fatalf("b's heartbeats stopped reaching the server (%d before the cut, %d after, %d deaf): the test cut the wrong way", sent, fromB.Load(), deafFromB.Load())
	}

	proxy.Thaw()
	within("b hears itself and a counts it again", 5*time.Second, func() bool { return bLive() && aCountsB() })
}
