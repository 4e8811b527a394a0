package relay

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestStallGuardRefusesWhatWaitedThroughAPause has the guard's process
// "not run" for 2 s (its last tick set back, as a stop would leave it):
// requests read then are refused, and so are those read in the grace
// after the next tick notices the gap; then none are.
func TestStallGuardRefusesWhatWaitedThroughAPause(t *testing.T) {
	g := newStallGuard()
	if g.stalled() {
		t.Fatal("a guard that does not watch refuses requests")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var gaps atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.watch(ctx, func(gap time.Duration) { gaps.Store(int64(gap)) })
	}()
	waitFor(t, "the guard watching", func() bool { return g.last.Load() != 0 })
	if g.stalled() {
		t.Fatal("a guard ticking on time refuses requests")
	}
	g.last.Add(-int64(2 * time.Second)) // the process did not run for 2 s
	if !g.stalled() {
		t.Fatal("a request read after a pause, before the next tick, is not refused")
	}
	waitFor(t, "the gap noticed", func() bool { return gaps.Load() != 0 })
	if gap := time.Duration(gaps.Load()); gap < 2*time.Second {
		t.Fatalf("gap reported as %s, want at least 2s", gap)
	}
	if !g.stalled() {
		t.Fatal("a request read in the grace after a pause is not refused")
	}
	waitFor(t, "the grace over", func() bool { return !g.stalled() })
	cancel()
	<-done
	if g.stalled() {
		t.Fatal("a guard that stopped watching refuses requests")
	}
}
