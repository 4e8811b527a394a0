package dispatcher

import (
	"fmt"
	"testing"
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
