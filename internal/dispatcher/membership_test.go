package dispatcher

import (
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
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
