package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseProcStatCPU(t *testing.T) {
	// A command name with spaces and parentheses; utime 250, stime 50 ticks.
	stat := "4242 (push ctl (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 1000000 2000 18446744073709551615"
	got, err := parseProcStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Fatalf("cpu %s, want %s", got, want)
	}
	if _, err := parseProcStatCPU("4242 (pushctl) S 1"); err == nil {
		t.Fatal("a short stat line parsed")
	}
}

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS("Name:\tpushctl\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t12\n")
	if err != nil {
		t.Fatal(err)
	}
	if got != 2048<<10 {
		t.Fatalf("rss %d, want %d", got, 2048<<10)
	}
	if _, err := parseVmRSS("Name:\tpushctl\n"); err == nil {
		t.Fatal("a status without VmRSS parsed")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_heap_inuse_bytes 1.5e+06
pushproxy_dispatcher_pushes_total{result="sent"} 10
pushproxy_dispatcher_pushes_total{result="failed"} 2
pushproxy_dispatcher_pushes_total_other 99
`
	got, err := parseMetrics(strings.NewReader(text), []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "pushproxy_dispatcher_pushes_total", "absent"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"go_goroutines": 42, "go_memstats_heap_inuse_bytes": 1.5e6, "pushproxy_dispatcher_pushes_total": 12}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v", name, got[name], v)
		}
	}
	if _, ok := got["absent"]; ok {
		t.Error("a metric that is not there has a value")
	}
}

// TestEventsRaiseEachUsersCount checks the workload: users take turns, and
// each event of a user sets a count one higher than its previous one.
func TestEventsRaiseEachUsersCount(t *testing.T) {
	const users = 7
	last := make([]int64, users)
	for k := range 10 * users {
		u := eventUser(k, users)
		if c := eventCount(k, users); c != last[u]+1 {
			t.Fatalf("event %d of user %d sets %d after %d", k, u, c, last[u])
		}
		last[u]++
	}
}

// TestSenderKeepsUsersTogether checks that every request naming a user
// goes to the same sender, for single events and for batches.
func TestSenderKeepsUsersTogether(t *testing.T) {
	for _, batch := range []int{1, 100} {
		g := &generator{users: 1000, concurrency: 16}
		l := &load{batch: batch, first: 3000}
		senderOf := map[int]int{}
		for j := range 50 * g.users / batch {
			s := g.sender(l, j)
			for i := range batch {
				u := eventUser(l.first+j*batch+i, g.users)
				if prev, ok := senderOf[u]; ok && prev != s {
					t.Fatalf("batch %d: user %d goes to senders %d and %d", batch, u, prev, s)
				}
				senderOf[u] = s
			}
		}
	}
}

// TestLatencies matches events to the first badge covering them.
func TestLatencies(t *testing.T) {
	p := &provider{arrivals: [][]arrival{{{count: 1, at: 150}, {count: 3, at: 400}}, {}}}
	// Events 0..3 of 2 users: user 0 counts 1 and 2, user 1 counts 1 and 2.
	l := &load{first: 0, sentAt: []int64{100, 110, 200, 210}, ok: []bool{true, true, true, false}, stored: 3}
	lat, missing := l.latencies(p, 2)
	if !slices.Equal(lat, []time.Duration{50, 200}) || missing != 1 {
		t.Fatalf("latencies %v, %d missing; want [50 200], 1 missing", lat, missing)
	}
	if want := []int64{2, 1}; !slices.Equal(l.targets(2), want) {
		t.Fatalf("targets %v, want %v", l.targets(2), want)
	}
}

func TestParseConfig(t *testing.T) {
	env := map[string]string{"PUSHPROXY_BENCH_USERS": "500", "PUSHPROXY_BENCH_STEP": "3s"}
	c, err := parseConfig([]string{"-step", "7s", "-single-rates", "100,200", "-pipeline-arg=--window=20ms"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.users != 500 || c.step != 7*time.Second || !slices.Equal(c.singleRates, []int{100, 200}) || !slices.Equal(c.pipelineArgs, []string{"--window=20ms"}) {
		t.Fatalf("config %+v", c)
	}
	if (&bench{cfg: c}).windowDuration() != 20*time.Millisecond {
		t.Fatal("the window of the pipeline's flags is not the table's")
	}
	if _, err := parseConfig([]string{"-single-rates", "0"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Fatal("a rate of 0 parsed")
	}
	if _, err := parseConfig(nil, func(k string) string { return map[string]string{"PUSHPROXY_BENCH_USERS": "x"}[k] }, io.Discard); err == nil {
		t.Fatal("a bad environment value parsed")
	}
}

func TestChargeTraces(t *testing.T) {
	traces := `File: pushctl
Type: cpu
-----------+-------------------------------------------------------
     300ms   internal/runtime/syscall/linux.Syscall6
             github.com/nats-io/nats%2ego.(*Conn).publish
             github.com/pushproxy/pushproxy/internal/ingest.(*Publisher).Publish
             net/http.(*conn).serve
-----------+-------------------------------------------------------
    stream:  MAIL
   account:  $G
     100ms   github.com/nats-io/nats-server/v2/server/stree.(*SubjectTree[go.shape.struct { Msgs uint64 }]).Find
             github.com/nats-io/nats-server/v2/server.(*fileStore).StoreMsg
-----------+-------------------------------------------------------
     1.1s   runtime.scanobject
             runtime.gcBgMarkWorker
-----------+-------------------------------------------------------
`
	parts := pipelineParts()
	shares, total, err := chargeTraces(parts, traces)
	if err != nil {
		t.Fatal(err)
	}
	if total != 1500*time.Millisecond {
		t.Fatalf("total %s, want 1.5s", total)
	}
	want := map[string]float64{"garbage collection": 1100.0 / 1500, "ingest": 300.0 / 1500, "NATS server: file store": 100.0 / 1500}
	for i, p := range parts {
		for prefix, share := range want {
			if strings.HasPrefix(p.name, prefix) && shares[i] != share {
				t.Errorf("%s: %v, want %v", p.name, shares[i], share)
			}
		}
	}
}

func TestLatencyGoal(t *testing.T) {
	const window = 300 * time.Millisecond
	step := func(name string, rate int, p99 time.Duration, held bool) stepResult {
		l := &load{rate: rate, sentAt: make([]int64, 100), stored: 100}
		if !held {
			l.stored = 50 // under 97 % of the offered events
		}
		lat := make([]time.Duration, 100)
		for i := range lat {
			lat[i] = p99
		}
		return stepResult{name: name, load: l, lat: lat, drained: true, drain: window}
	}
	tests := []struct {
		name       string
		rows       []stepResult
		prefix     string
		wantRate   int
		wantP99    time.Duration
		wantHeld   int
		wantChosen int // steps of the prefix
	}{
		{"met up to the second rate", []stepResult{
			step("warm-up", 9000, 10*time.Millisecond, true),
			step("single-2000", 2000, 320*time.Millisecond, true),
			step("single-5000", 5000, 349*time.Millisecond, true),
			step("single-10000", 10000, 900*time.Millisecond, true),
			step("batch-2000", 2000, 310*time.Millisecond, true),
		}, "single", 5000, 349 * time.Millisecond, 10000, 3},
		{"a step that did not hold does not meet it", []stepResult{
			step("single-2000", 2000, 320*time.Millisecond, true),
			step("single-5000", 5000, 320*time.Millisecond, false),
		}, "single", 2000, 320 * time.Millisecond, 2000, 2},
		{"never met", []stepResult{
			step("raw-single-2000", 2000, 400*time.Millisecond, true),
		}, "raw-single", 0, 0, 2000, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows := stepsOf(tt.rows, tt.prefix)
			if len(rows) != tt.wantChosen {
				t.Fatalf("stepsOf %q: %d steps, want %d", tt.prefix, len(rows), tt.wantChosen)
			}
			rate, p99 := withinLatency(rows, window)
			if rate != tt.wantRate || p99 != tt.wantP99 {
				t.Errorf("withinLatency: %d at p99 %s, want %d at %s", rate, p99, tt.wantRate, tt.wantP99)
			}
			if held := highestHeld(rows, window); held != tt.wantHeld {
				t.Errorf("highestHeld: %d, want %d", held, tt.wantHeld)
			}
		})
	}
}
