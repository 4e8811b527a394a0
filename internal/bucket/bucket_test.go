package bucket

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestTake(t *testing.T) {
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	type step struct {
		at   time.Duration // after start
		n    int
		ok   bool
		wait time.Duration // when refused
	}
	tests := []struct {
		name  string
		limit rate.Limit
		burst int
		steps []step
	}{
		{name: "the burst, then the rate", limit: 10, burst: 20, steps: []step{
			{n: 20, ok: true},
			{n: 1, wait: 100 * time.Millisecond},
			{n: 3, wait: 300 * time.Millisecond},
			{at: 100 * time.Millisecond, n: 1, ok: true},
			{at: 150 * time.Millisecond, n: 1, wait: 50 * time.Millisecond},
		}},
		{name: "larger than the burst costs the burst", limit: 10, burst: 20, steps: []step{
			{n: 500, ok: true},
			{n: 500, wait: 2 * time.Second},
			{at: 2 * time.Second, n: 500, ok: true},
		}},
		{name: "refusals take nothing", limit: 1, burst: 2, steps: []step{
			{n: 2, ok: true},
			{at: 500 * time.Millisecond, n: 1, wait: 500 * time.Millisecond},
			{at: 500 * time.Millisecond, n: 1, wait: 500 * time.Millisecond},
			{at: time.Second, n: 1, ok: true},
		}},
		{name: "no limit", limit: rate.Inf, burst: 1, steps: []step{
			{n: 1000, ok: true},
			{n: 1000, ok: true},
		}},
		{name: "a wait is never nothing", limit: 1e9, burst: 1, steps: []step{
			{n: 1, ok: true},
			{n: 1, wait: minWait},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := rate.NewLimiter(tt.limit, tt.burst)
			for i, s := range tt.steps {
				ok, wait := Take(b, start.Add(s.at), s.n)
				if ok != s.ok || (wait-s.wait).Abs() > time.Microsecond {
					t.Fatalf("step %d, %d at %s: ok %v wait %s; want %v %s", i, s.n, s.at, ok, wait, s.ok, s.wait)
				}
			}
		})
	}
}

// TestRefusedAtOnceTakeNothing: requests refused at once, however many,
// take nothing from the bucket; a flood held back leaves no debt behind
// it. With a reservation cancelled instead, this test left 6 to 19
// seconds of debt.
func TestRefusedAtOnceTakeNothing(t *testing.T) {
	const (
		perSecond = 20
		senders   = 32
		each      = 200
	)
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	b := rate.NewLimiter(perSecond, perSecond)
	if ok, _ := Take(b, start, perSecond); !ok {
		t.Fatal("a full bucket refused its burst")
	}
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for i := range each {
				if ok, _ := Take(b, start, 1+i%5); ok {
					t.Error("an empty bucket let a request through")
					return
				}
			}
		})
	}
	wg.Wait()
	if ok, wait := Take(b, start.Add(time.Second), perSecond); !ok {
		t.Fatalf("a second after the flood, a second's tokens refused (wait %s): the refusals left a debt", wait)
	}
}
