package coalesce

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func intp(n int) *int { return &n }

// step is one action of a scenario: observe, due, delivered, failed or flush.
type step struct {
	ms    int
	op    string
	key   string
	count int
	chg   Change
	retry int // failed: retry after this many ms; -1 drops
	// waited: observe: how many ms the change waited before it was
	// observed (Update.Waited).
	waited int
	want   []string
}

func obs(ms int, key string, count int, chg Change) step {
	return step{ms: ms, op: "observe", key: key, count: count, chg: chg}
}

// late is obs of a change that waited waited ms before it was observed.
func late(ms int, key string, count int, chg Change, waited int) step {
	s := obs(ms, key, count, chg)
	s.waited = waited
	return s
}
func due(ms int, want ...string) step   { return step{ms: ms, op: "due", want: want} }
func flush(ms int, want ...string) step { return step{ms: ms, op: "flush", want: want} }
func delivered(ms int, key string, count int) step {
	return step{ms: ms, op: "delivered", key: key, count: count}
}
func failed(ms int, key string, retry int) step {
	return step{ms: ms, op: "failed", key: key, retry: retry}
}

func describe(ps []Push) []string {
	var out []string
	for _, p := range ps {
		s := fmt.Sprintf("%s=%d", p.Key, p.Count)
		if p.Skip {
			s += " skip"
		}
		out = append(out, s)
	}
	return out
}

func TestScenarios(t *testing.T) {
	cfg := Config{Window: 300 * time.Millisecond, Debounce: 2 * time.Second, MaxDelay: 10 * time.Second}
	tests := []struct {
		name   string
		pushed map[string]int
		steps  []step
	}{
		{
			name: "new mail waits the window",
			steps: []step{
				obs(0, "a", 1, Increase),
				due(299),
				due(300, "a=1"),
			},
		},
		{
			name: "a burst of new mail becomes one push with the final count",
			steps: []step{
				obs(0, "a", 1, Increase),
				obs(100, "a", 2, Increase),
				obs(250, "a", 3, Increase),
				due(299),
				due(300, "a=3"),
			},
		},
		{
			name: "steady new mail still goes out every window",
			steps: []step{
				obs(0, "a", 1, Increase),
				obs(200, "a", 2, Increase),
				due(300, "a=2"),
				delivered(310, "a", 2),
				obs(400, "a", 3, Increase),
				obs(600, "a", 4, Increase),
				due(699),
				due(700, "a=4"),
			},
		},
		{
			name: "new mail that waited in queues is pushed a window after it reached the pipeline",
			steps: []step{
				late(0, "a", 1, Increase, 100),
				due(199),
				due(200, "a=1"),
			},
		},
		{
			name: "new mail that waited most of the window still waits a quarter of it",
			steps: []step{
				late(0, "a", 1, Increase, 290),
				due(74),
				due(75, "a=1"),
			},
		},
		{
			name: "a backlog's changes, read more than a window late, wait the whole window and become one push",
			steps: []step{
				late(0, "a", 1, Increase, 5000),
				late(100, "a", 2, Increase, 4800),
				late(250, "a", 3, Increase, 4600),
				due(299),
				due(300, "a=3"),
			},
		},
		{
			name: "a later increase that waited longer may bring the push forward",
			steps: []step{
				obs(0, "a", 1, Increase),
				late(100, "a", 2, Increase, 250),
				due(174),
				due(175, "a=2"),
			},
		},
		{
			name: "a wait below zero (clocks that disagree) counts as none",
			steps: []step{
				late(0, "a", 1, Increase, -500),
				due(299),
				due(300, "a=1"),
			},
		},
		{
			name: "a decrease is debounced from its observation, however long it waited",
			steps: []step{
				late(0, "a", 1, Decrease, 5000),
				due(1999),
				due(2000, "a=1"),
			},
		},
		{
			name: "a decrease is debounced after the last change",
			steps: []step{
				obs(0, "a", 4, Decrease),
				obs(1500, "a", 3, Decrease),
				due(2000),
				due(3499),
				due(3500, "a=3"),
			},
		},
		{
			name: "debouncing never waits longer than the max delay",
			steps: []step{
				obs(0, "a", 9, Decrease),
				obs(1500, "a", 8, Decrease),
				obs(3000, "a", 7, Decrease),
				obs(4500, "a", 6, Decrease),
				obs(6000, "a", 5, Decrease),
				obs(7500, "a", 4, Decrease),
				obs(9000, "a", 3, Decrease),
				due(9999),
				due(10000, "a=3"),
			},
		},
		{
			name: "a decrease does not delay new mail",
			steps: []step{
				obs(0, "a", 2, Increase),
				obs(100, "a", 1, Decrease),
				due(300, "a=1"),
			},
		},
		{
			name: "new mail hurries a pending decrease",
			steps: []step{
				obs(0, "a", 1, Decrease),
				obs(1000, "a", 2, Increase),
				due(1299),
				due(1300, "a=2"),
			},
		},
		{
			name:   "the count the devices show is skipped",
			pushed: map[string]int{"a": 5},
			steps: []step{
				obs(0, "a", 6, Increase),
				obs(100, "a", 5, Decrease),
				due(300, "a=5 skip"),
				due(20000),
			},
		},
		{
			name: "changes during a push in flight wait for it",
			steps: []step{
				obs(0, "a", 1, Increase),
				due(300, "a=1"),
				obs(400, "a", 2, Increase),
				due(800),
				due(5000),
				delivered(5001, "a", 1),
				due(5001, "a=2"),
			},
		},
		{
			name: "a push in flight that ends with the count pending skips it",
			steps: []step{
				obs(0, "a", 1, Increase),
				due(300, "a=1"),
				obs(400, "a", 2, Increase),
				obs(450, "a", 1, Decrease),
				delivered(800, "a", 1),
				due(800, "a=1 skip"),
			},
		},
		{
			name: "a failed push is retried no earlier than asked",
			steps: []step{
				obs(0, "a", 1, Increase),
				due(300, "a=1"),
				failed(400, "a", 1000),
				obs(500, "a", 2, Increase),
				due(1399),
				due(1400, "a=2"),
			},
		},
		{
			name: "a retried push keeps its count when nothing changed",
			steps: []step{
				obs(0, "a", 1, Increase),
				due(300, "a=1"),
				failed(400, "a", 100),
				due(499),
				due(500, "a=1"),
			},
		},
		{
			name:   "a dropped push leaves the devices as they were",
			pushed: map[string]int{"a": 0},
			steps: []step{
				obs(0, "a", 1, Increase),
				due(300, "a=1"),
				failed(400, "a", -1),
				due(20000),
				obs(20000, "a", 0, Decrease),
				due(22000, "a=0 skip"),
			},
		},
		{
			name: "keys are independent and come out earliest first",
			steps: []step{
				obs(0, "b", 1, Decrease),
				obs(10, "a", 1, Increase),
				obs(20, "c", 1, Increase),
				due(320, "a=1", "c=1"),
				due(2000, "b=1"),
			},
		},
		{
			name: "flush sends everything pending except behind a push in flight",
			steps: []step{
				obs(0, "a", 1, Increase),
				due(300, "a=1"),
				obs(310, "a", 2, Increase),
				obs(320, "b", 3, Decrease),
				flush(330, "b=3"),
				delivered(340, "a", 1),
				flush(340, "a=2"),
			},
		},
		{
			name: "flush leaves a push held back for a retry",
			steps: []step{
				obs(0, "a", 1, Increase),
				due(300, "a=1"),
				failed(310, "a", 1000),
				flush(320),
				due(1310, "a=1"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(cfg)
			for i, s := range tt.steps {
				now := at(s.ms)
				switch s.op {
				case "observe":
					var pushed *int
					if n, ok := tt.pushed[s.key]; ok {
						pushed = intp(n)
					}
					c.Observe(now, s.key, Update{Count: s.count, Seq: uint64(i + 1), Change: s.chg, Pushed: pushed, Waited: time.Duration(s.waited) * time.Millisecond})
				case "due", "flush":
					var got []Push
					if s.op == "due" {
						got = c.Due(now)
					} else {
						got = c.Flush(now)
					}
					if g := describe(got); !reflect.DeepEqual(g, s.want) {
						t.Fatalf("step %d (%s at %dms): got %v, want %v", i, s.op, s.ms, g, s.want)
					}
				case "delivered":
					c.Delivered(now, s.key, s.count)
				case "failed":
					var retryAt time.Time
					if s.retry >= 0 {
						retryAt = now.Add(time.Duration(s.retry) * time.Millisecond)
					}
					c.Failed(now, s.key, retryAt)
				}
			}
		})
	}
}

func TestPushCarriesWhatItCovers(t *testing.T) {
	c := New(Config{})
	c.Observe(at(0), "a", Update{Count: 1, Seq: 10, Change: Increase})
	c.Observe(at(100), "a", Update{Count: 2, Seq: 12, Change: Increase})
	c.Observe(at(200), "a", Update{Count: 1, Seq: 11, Change: Decrease})
	if d, ok := c.NextDeadline(); !ok || !d.Equal(at(300)) {
		t.Fatalf("NextDeadline = %v, %v; want %v", d, ok, at(300))
	}
	got := c.Due(at(300))
	want := []Push{{Key: "a", Count: 1, Seq: 12, Changes: 3, First: at(0), Deadline: at(300)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Due = %+v, want %+v", got, want)
	}
	if _, ok := c.NextDeadline(); ok {
		t.Fatal("a deadline is left while the only push is in flight")
	}
	if st, ok := c.Inspect("a"); !ok || !st.InFlight || st.Pending {
		t.Fatalf("Inspect = %+v, %v; want in flight, not pending", st, ok)
	}
	c.Delivered(at(400), "a", 1)
	if c.Len() != 0 {
		t.Fatalf("Len = %d after the only push was delivered, want 0", c.Len())
	}
}

func TestForget(t *testing.T) {
	c := New(Config{})
	c.Observe(at(0), "a", Update{Count: 1, Change: Increase})
	c.Forget("a")
	if got := c.Due(at(60000)); len(got) != 0 {
		t.Fatalf("Due after Forget = %v", got)
	}
	c.Delivered(at(0), "a", 1) // no effect, no panic
	c.Failed(at(0), "a", at(1))
}

func TestHold(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		window, waited, want time.Duration
	}{
		{0, 0, DefaultWindow},
		{0, ms(100), ms(200)},
		{0, ms(225), ms(75)},
		{0, ms(226), ms(75)},
		{0, ms(300), ms(75)},
		{0, ms(301), DefaultWindow},
		{0, time.Hour, DefaultWindow},
		{0, -time.Hour, DefaultWindow},
		{ms(20), ms(10), ms(10)},
		{ms(20), ms(16), ms(5)},
		{ms(20), ms(50), ms(20)},
	}
	for _, tt := range tests {
		if got := (Config{Window: tt.window}).Hold(tt.waited); got != tt.want {
			t.Errorf("Config{Window: %s}.Hold(%s) = %s, want %s", tt.window, tt.waited, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Window: 20 * time.Millisecond, Debounce: 50 * time.Millisecond, MaxDelay: time.Second}, true},
		{Config{Window: -1}, false},
		{Config{Window: time.Minute, MaxDelay: time.Second}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tt.cfg, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Validate error %v does not match ErrInvalidConfig", err)
		}
	}
	d := Config{}.WithDefaults()
	if d.Window != DefaultWindow || d.Debounce != DefaultDebounce || d.MaxDelay != DefaultMaxDelay {
		t.Fatalf("defaults = %+v", d)
	}
}

func TestSimulate(t *testing.T) {
	cfg := Config{Window: 300 * time.Millisecond, Debounce: 2 * time.Second, MaxDelay: 10 * time.Second}
	in := []Input{
		{At: at(0), Key: "a", Update: Update{Count: 1, Seq: 1, Change: Increase}},
		{At: at(50), Key: "a", Update: Update{Count: 2, Seq: 2, Change: Increase}},
		{At: at(1000), Key: "a", Update: Update{Count: 1, Seq: 3, Change: Decrease}},
		{At: at(1200), Key: "a", Update: Update{Count: 2, Seq: 4, Change: Increase}},
	}
	got := Simulate(cfg, in)
	want := []string{"a=2", "a=2 skip"}
	if g := describe(got); !reflect.DeepEqual(g, want) {
		t.Fatalf("Simulate = %v, want %v", g, want)
	}
}

// TestPropertyFinalCountIsPushed drives many keys with random changes,
// random push durations and random failures, and checks the invariants:
// every key ends with its final count pushed, a key never has two pushes in
// flight, pushes of a key never go backwards, and a push that is not a
// retry became due within MaxDelay of its first change.
func TestPropertyFinalCountIsPushed(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { checkRandomRun(t, seed) })
	}
}

func checkRandomRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed*7919))
	cfg := Config{
		Window:   time.Duration(1+rng.IntN(500)) * time.Millisecond,
		Debounce: time.Duration(1+rng.IntN(3000)) * time.Millisecond,
	}
	cfg.MaxDelay = cfg.Window + time.Duration(rng.IntN(10000))*time.Millisecond
	c := New(cfg)
	keys := 1 + rng.IntN(20)
	count := make([]int, keys)   // true current count
	pushed := make([]*int, keys) // what the devices show
	type flight struct {
		count int
		ends  time.Time
		fails bool
	}
	inflight := map[string]flight{}
	lastSeq := map[string]uint64{}
	now := t0
	var seq uint64

	settle := func(until time.Time) {
		for {
			// End the pushes in flight that are over, earliest first.
			var next string
			var nextAt time.Time
			for k, f := range inflight {
				if !f.ends.After(until) && (next == "" || f.ends.Before(nextAt) || (f.ends.Equal(nextAt) && k < next)) {
					next, nextAt = k, f.ends
				}
			}
			d, ok := c.NextDeadline()
			if ok && !d.After(until) && (next == "" || !d.After(nextAt)) {
				for _, p := range c.Due(d) {
					if p.Seq < lastSeq[p.Key] {
						t.Fatalf("push of %s went backwards: seq %d after %d", p.Key, p.Seq, lastSeq[p.Key])
					}
					lastSeq[p.Key] = p.Seq
					if p.Retry == 0 && p.Deadline.After(p.First.Add(cfg.MaxDelay)) {
						t.Fatalf("push of %s due %s after its first change, more than the max delay %s", p.Key, p.Deadline.Sub(p.First), cfg.MaxDelay)
					}
					if p.Skip {
						continue
					}
					if _, dup := inflight[p.Key]; dup {
						t.Fatalf("second push of %s while one is in flight", p.Key)
					}
					inflight[p.Key] = flight{count: p.Count, ends: d.Add(time.Duration(rng.IntN(400)) * time.Millisecond), fails: rng.IntN(5) == 0}
				}
				continue
			}
			if next == "" {
				return
			}
			f := inflight[next]
			delete(inflight, next)
			var k int
			fmt.Sscanf(next, "k%d", &k)
			if f.fails {
				c.Failed(f.ends, next, f.ends.Add(time.Duration(rng.IntN(1000))*time.Millisecond))
			} else {
				pushed[k] = intp(f.count)
				c.Delivered(f.ends, next, f.count)
			}
		}
	}

	steps := 1 + rng.IntN(300)
	for range steps {
		now = now.Add(time.Duration(rng.IntN(700)) * time.Millisecond)
		settle(now)
		k := rng.IntN(keys)
		before := count[k]
		switch rng.IntN(3) {
		case 0:
			count[k] += 1 + rng.IntN(3)
		case 1:
			count[k] = max(0, count[k]-1-rng.IntN(3))
		default:
			count[k] = rng.IntN(10)
		}
		seq++
		// Some changes waited in queues before they were observed, some
		// longer than the window, a few by a clock that disagrees.
		waited := time.Duration(rng.IntN(2*int(cfg.Window.Milliseconds())+1)-int(cfg.Window.Milliseconds())/4) * time.Millisecond
		c.Observe(now, fmt.Sprintf("k%d", k), Update{Count: count[k], Seq: seq, Change: ChangeOf(before, count[k]), Pushed: pushed[k], Waited: waited})
	}
	// Let time run out, with no more failures, until everything settles.
	for range 1000 {
		for k, f := range inflight {
			f.fails = false
			inflight[k] = f
		}
		now = now.Add(time.Hour)
		settle(now)
		if len(inflight) == 0 && c.Len() == 0 {
			break
		}
	}
	if c.Len() != 0 {
		t.Fatalf("%d keys still pending after everything settled", c.Len())
	}
	for k := range keys {
		if pushed[k] == nil {
			// The first push of a key is never skipped, so nothing
			// delivered means the key never changed.
			if lastSeq[fmt.Sprintf("k%d", k)] != 0 {
				t.Fatalf("k%d: pushes decided but none delivered", k)
			}
			continue
		}
		if *pushed[k] != count[k] {
			t.Fatalf("k%d: devices show %d, final count is %d", k, *pushed[k], count[k])
		}
	}
}

func TestPropertySimulateEndsWithFinalCount(t *testing.T) {
	for seed := uint64(1); seed <= 100; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		var in []Input
		final := map[string]int{}
		now := t0
		for i := range 200 {
			now = now.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
			key := fmt.Sprintf("u%d", rng.IntN(5))
			n := rng.IntN(8)
			in = append(in, Input{At: now, Key: key, Update: Update{Count: n, Seq: uint64(i + 1), Change: ChangeOf(final[key], n)}})
			final[key] = n
		}
		last := map[string]int{}
		for _, p := range Simulate(Config{}, in) {
			if !p.Skip {
				last[p.Key] = p.Count
			}
		}
		for k, n := range final {
			if got, ok := last[k]; !ok || got != n {
				t.Fatalf("seed %d: %s last pushed %d (pushed=%v), final %d", seed, k, got, ok, n)
			}
		}
	}
}

func TestBurstDoesNotGrowTheQueue(t *testing.T) {
	c := New(Config{})
	for i := range 10000 {
		c.Observe(at(i%300), "a", Update{Count: i, Seq: uint64(i + 1), Change: Increase})
		c.Observe(at(i%300), "b", Update{Count: 10000 - i, Seq: uint64(i + 1), Change: Decrease})
	}
	if n := len(c.queue); n > 10 {
		t.Fatalf("%d heap items for two keys after a burst", n)
	}
	got := c.Due(at(60000))
	if len(got) != 2 {
		t.Fatalf("Due = %v, want one push per key", describe(got))
	}
}
