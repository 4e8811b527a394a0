package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pushproxy/pushproxy/internal/benchtest"
)

// Go runtime metrics of the pipeline process, from its /metrics.
const (
	metricHeapInuse  = "go_memstats_heap_inuse_bytes"
	metricHeapAlloc  = "go_memstats_heap_alloc_bytes"
	metricHeapObject = "go_memstats_heap_objects"
	metricGoroutines = "go_goroutines"
	metricHeapIdle   = "go_memstats_heap_idle_bytes"
	metricHeapFreed  = "go_memstats_heap_released_bytes"
)

// memory is the pipeline's memory at one moment.
type memory struct {
	rss                    int64
	heapInuse, heapLive    float64
	heapIdle, heapReleased float64
	objects, goroutines    float64
}

// memory reads the pipeline's resident memory and Go heap.
func (b *bench) memory(ctx context.Context) (memory, error) {
	rss, err := b.p.rss()
	if err != nil {
		return memory{}, err
	}
	m, err := b.p.metrics(ctx, metricHeapInuse, metricHeapAlloc, metricHeapObject, metricGoroutines, metricHeapIdle, metricHeapFreed)
	if err != nil {
		return memory{}, err
	}
	return memory{rss: rss, heapInuse: m[metricHeapInuse], heapLive: m[metricHeapAlloc], heapIdle: m[metricHeapIdle], heapReleased: m[metricHeapFreed],
		objects: m[metricHeapObject], goroutines: m[metricGoroutines]}, nil
}

// bench runs the steps against one process: the pipeline or the raw
// chain.
type bench struct {
	cfg   config
	p     *process
	prov  *provider
	gen   *generator
	clock *clock
	dir   string
	out   io.Writer
	// prefix starts the names of the steps (and so of their files): "raw-"
	// for the raw chain.
	prefix string
	// parts says whether the process is pushproxy's, whose CPU profile
	// printTops charges to the parts of the pipeline.
	parts bool
}

// stepResult is one row of the table.
type stepResult struct {
	name    string
	load    *load
	pushes  int64 // badges the provider received while the load was offered
	total   int64 // badges from the start to the end of the drain
	lat     []time.Duration
	missing int           // stored events no badge covered by the end of the drain
	drain   time.Duration // from the last answer to the last badge due
	drained bool
	cpu     time.Duration // the pipeline's CPU time from the start to the end of the drain
	wall    time.Duration
	self    time.Duration // the bench process's CPU time, likewise
	mem     memory
	cpuProf string
}

// cpuPerEvent is the process's CPU time per stored event, in µs.
func (r stepResult) cpuPerEvent() float64 {
	return float64(r.cpu.Microseconds()) / float64(max(r.load.stored, 1))
}

// delivered is the rate the process carried end to end: the stored
// events a badge covered by the end of the drain, per second from the
// start of the load to then.
func (r stepResult) delivered() float64 {
	if r.wall <= 0 {
		return 0
	}
	return float64(r.load.stored-r.missing) / r.wall.Seconds()
}

// holdSlack is how long after the last answer, beyond the coalescing
// window, the pushes due may take for a step to count as held: longer
// means a backlog built up during the step.
const holdSlack = 2 * time.Second

// holds reports whether the pipeline took the step's load: nearly every
// offered event stored, and the pushes caught up within the window and
// holdSlack of the last answer. It decides whether a higher rate is tried;
// nothing is asserted.
func (r stepResult) holds(window time.Duration) bool {
	return r.drained && r.drain <= window+holdSlack && float64(r.load.stored) >= 0.97*float64(r.load.offered())
}

// step offers rate events/s in requests of batch for d, waits for the
// pushes due, and measures.
func (b *bench) step(ctx context.Context, name string, rate, batch int, d time.Duration) (stepResult, error) {
	r := stepResult{name: name}
	cpu0, err := b.p.cpu()
	if err != nil {
		return r, err
	}
	self0, err := selfCPU()
	if err != nil {
		return r, err
	}
	t0 := b.clock.now()
	pushes0 := b.prov.pushes.Load()
	type profiled struct {
		ok  bool
		err error
	}
	profDone := make(chan profiled, 1)
	cpuProf := filepath.Join(b.dir, "cpu-"+name+".pprof")
	go func() {
		secs := max(1, int(d.Round(time.Second)/time.Second))
		ok, err := b.p.profile(ctx, fmt.Sprintf("profile?seconds=%d", secs), cpuProf)
		profDone <- profiled{ok, err}
	}()
	r.load = b.gen.run(ctx, rate, batch, d)
	r.pushes = b.prov.pushes.Load() - pushes0
	want := r.load.targets(b.cfg.users)
	deadline := time.Now().Add(b.cfg.drain)
	for !b.prov.covered(want) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	end := b.clock.now()
	r.drained = b.prov.covered(want)
	r.drain = time.Duration(end - r.load.end)
	r.total = b.prov.pushes.Load() - pushes0
	r.wall = time.Duration(end - t0)
	cpu1, err := b.p.cpu()
	if err != nil {
		return r, err
	}
	self1, err := selfCPU()
	if err != nil {
		return r, err
	}
	r.cpu, r.self = cpu1-cpu0, self1-self0
	if p := <-profDone; p.err != nil {
		return r, p.err
	} else if p.ok {
		r.cpuProf = cpuProf
	}
	if _, err := b.p.profile(ctx, "heap", filepath.Join(b.dir, "heap-"+name+".pprof")); err != nil {
		return r, err
	}
	if r.mem, err = b.memory(ctx); err != nil {
		return r, err
	}
	if err := b.p.saveMetrics(ctx, filepath.Join(b.dir, "metrics-"+name+".txt")); err != nil {
		return r, err
	}
	r.lat, r.missing = r.load.latencies(b.prov, b.cfg.users)
	b.prov.trim()
	return r, ctx.Err()
}

// steps runs the warm-up, the single-event steps and the batch steps, each
// list until a step does not hold, then prints the table and the profiles'
// top functions, and returns the steps.
func (b *bench) steps(ctx context.Context) ([]stepResult, error) {
	var rows []stepResult
	run := func(name string, rate, batch int, d time.Duration) (bool, error) {
		name = b.prefix + name
		fmt.Fprintf(b.out, "pipelinebench: %s: %d events/s in requests of %d for %s\n", name, rate, batch, d)
		r, err := b.step(ctx, name, rate, batch, d)
		if err != nil {
			return false, fmt.Errorf("step %s: %w", name, err)
		}
		rows = append(rows, r)
		return r.holds(b.windowDuration()), nil
	}
	if b.cfg.warmup > 0 && len(b.cfg.singleRates) > 0 {
		if _, err := run("warm-up", b.cfg.singleRates[0], 1, b.cfg.warmup); err != nil {
			return nil, err
		}
	}
	for _, list := range []struct {
		kind  string
		rates []int
		batch int
	}{{"single", b.cfg.singleRates, 1}, {"batch", b.cfg.batchRates, b.cfg.batchSize}} {
		for _, rate := range list.rates {
			held, err := run(fmt.Sprintf("%s-%d", list.kind, rate), rate, list.batch, b.cfg.step)
			if err != nil {
				return nil, err
			}
			if !held {
				fmt.Fprintf(b.out, "pipelinebench: %s at %d events/s did not hold; no higher %s rate\n", list.kind, rate, list.kind)
				break
			}
		}
	}
	b.printTable(rows)
	b.printTops(ctx, rows)
	return rows, nil
}

// defaultWindow is pushctl standalone's default coalescing window.
const defaultWindow = 300 * time.Millisecond

// windowDuration is the coalescing window the pipeline runs with: -window,
// or --window among the pipeline's flags, or its default.
func (b *bench) windowDuration() time.Duration {
	if b.cfg.window > 0 {
		return b.cfg.window
	}
	for _, a := range b.cfg.pipelineArgs {
		if v, ok := strings.CutPrefix(a, "--window="); ok {
			if d, err := time.ParseDuration(v); err == nil {
				return d
			}
		}
	}
	return defaultWindow
}

// window describes the coalescing window for the table.
func (b *bench) window() string {
	d := b.windowDuration()
	if d == defaultWindow {
		return d.String() + " (default)"
	}
	return d.String()
}

// printTable prints one row per step.
func (b *bench) printTable(rows []stepResult) {
	if b.parts {
		fmt.Fprintf(b.out, "\nwhole pipeline: pushctl standalone (pid %d), %d users with one APNs device each, coalescing window %s, ingest and relay rate limits off; %d CPUs\n",
			b.p.pid(), b.cfg.users, b.window(), runtime.NumCPU())
	} else {
		fmt.Fprintf(b.out, "\nthe raw chain (pid %d): the pipeline's raw stages chained (rawchain.go), the same users and load, no coalescing; %d CPUs\n",
			b.p.pid(), runtime.NumCPU())
	}
	fmt.Fprintln(b.out, "latency: event sent to ingest -> badge covering it at the provider (HTTP/2); CPU and memory: the process under test alone (/proc), heap from its go_memstats")
	w := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "step\tper req\toffered ev/s\tachieved ev/s\tpushes/s\tpush/ev\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\tCPU µs/ev\tpipeline cores\tbench cores\tRSS MiB\theap MiB\tunsent\tfailed\tno push\tdrain s\t")
	for _, r := range rows {
		l := r.load
		send := time.Duration(l.end - l.start).Seconds()
		fmt.Fprintf(w, "%s\t%d\t%d\t%.0f\t%.0f\t%.2f\t%s\t%s\t%s\t%s\t%.0f\t%.2f\t%.2f\t%.0f\t%.0f\t%d\t%d\t%d\t%.1f%s\t\n",
			r.name, l.batch, l.rate, l.achieved(), float64(r.pushes)/send, float64(r.total)/float64(max(l.stored, 1)),
			ms(benchtest.Percentile(r.lat, 0.5)), ms(benchtest.Percentile(r.lat, 0.99)), ms(benchtest.Percentile(r.lat, 0.999)), ms(benchtest.Percentile(r.lat, 1)),
			r.cpuPerEvent(), r.cpu.Seconds()/r.wall.Seconds(), r.self.Seconds()/r.wall.Seconds(),
			float64(r.mem.rss)/(1<<20), r.mem.heapInuse/(1<<20), l.unsent, l.failed, r.missing, r.drain.Seconds(), drainMark(r))
	}
	_ = w.Flush()
	for _, r := range rows {
		if r.load.failure != "" {
			fmt.Fprintf(b.out, "%s: first failed request: %s\n", r.name, r.load.failure)
		}
	}
	if n, why := b.prov.refused(); n > 0 {
		fmt.Fprintf(b.out, "the provider refused %d requests; the first: %s\n", n, why)
	}
	fmt.Fprintf(b.out, "unsent: events whose sender was still busy (not sent); no push: stored events no badge covered by the end of the drain (*: drain timed out); drain: last answer to last push due (a step holds with >= 97%% stored and a drain <= window + %s)\n", holdSlack)
}

// drainMark flags a step whose pushes were not all delivered.
func drainMark(r stepResult) string {
	if r.drained {
		return ""
	}
	return "*"
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// printTops prints where each step's CPU went, by part of the pipeline
// (from its CPU profile), and the top functions of the last heap profile.
func (b *bench) printTops(ctx context.Context, rows []stepResult) {
	if !b.parts || b.cfg.top <= 0 || len(rows) == 0 || rows[0].cpuProf == "" {
		return
	}
	parts := pipelineParts()
	fmt.Fprintf(b.out, "\nCPU µs per event by part of the pipeline (share of the step's CPU profile x its CPU µs/ev; profiles cpu-<step>.pprof in %s):\n", b.dir)
	w := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
	fmt.Fprint(w, "part\t")
	shares := make([][]float64, len(rows))
	for i, r := range rows {
		fmt.Fprintf(w, "%s\t", r.name)
		var err error
		if shares[i], _, err = partShares(ctx, parts, r.cpuProf); err != nil {
			fmt.Fprintf(b.out, "pipelinebench: %v\n", err)
			return
		}
	}
	fmt.Fprintln(w)
	for j, p := range parts {
		fmt.Fprintf(w, "%s\t", p.name)
		for i, r := range rows {
			fmt.Fprintf(w, "%.0f (%2.0f%%)\t", shares[i][j]*r.cpuPerEvent(), 100*shares[i][j])
		}
		fmt.Fprintln(w)
	}
	_ = w.Flush()
	last := rows[len(rows)-1].name
	b.printTop(ctx, "heap in use after step "+last, filepath.Join(b.dir, "heap-"+last+".pprof"), "-sample_index=inuse_space")
}

// printTop prints go tool pprof -top of a profile, and its path.
func (b *bench) printTop(ctx context.Context, title, file string, args ...string) {
	args = append([]string{"tool", "pprof", "-top", fmt.Sprintf("-nodecount=%d", b.cfg.top)}, append(args, file)...)
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	fmt.Fprintf(b.out, "\n%s (%s):\n", title, file)
	if err != nil {
		fmt.Fprintf(b.out, "go tool pprof: %v\n%s", err, out)
		return
	}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		fmt.Fprintln(b.out, line)
	}
}

// selfCPU is the bench process's CPU time so far.
func selfCPU() (time.Duration, error) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, fmt.Errorf("reading the bench's CPU time: %w", err)
	}
	return parseProcStatCPU(string(data))
}
