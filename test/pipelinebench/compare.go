package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pushproxy/pushproxy/internal/benchtest"
)

// rawChainGoal is the share of the raw chain's rate, and of its CPU per
// event, that the pipeline should reach (issue: the whole pipeline at
// 50 % or more of the sum of its stages' anchors).
const rawChainGoal = 50

// againstRawChain runs the same steps against the raw chain (with its
// data in dataDir), once the pipeline has stopped, and compares them with
// the pipeline's steps.
func (b *bench) againstRawChain(ctx context.Context, dataDir string, pipelineRows []stepResult) error {
	fmt.Fprintln(b.out, "\npipelinebench: starting the raw chain, the pipeline's raw stages chained (rawchain.go), for the same steps")
	raw, err := startRawChain(ctx, dataDir, b.dir, b.cfg.pprof, b.prov)
	if err != nil {
		return err
	}
	defer raw.stop()
	fmt.Fprintf(b.out, "pipelinebench: the raw chain pid %d, events API %s, pprof %s\n", raw.pid(), raw.ingestURL, orNone(raw.pprofURL))
	rb := *b
	rb.p, rb.prefix, rb.parts = raw, "raw-", false
	b.gen.retarget(raw.ingestURL)
	rawRows, err := rb.steps(ctx)
	if err != nil {
		return err
	}
	if err := stopProcess(raw); err != nil {
		return err
	}
	b.compare(pipelineRows, rawRows)
	b.compareLatency(pipelineRows, rawRows)
	return nil
}

// compare prints, for each step both ran, the pipeline's rate and CPU per
// event beside the raw chain's, then one benchmark line per kind of
// request (make bench's table reads them) for the highest offered rate
// both ran.
func (b *bench) compare(pipelineRows, rawRows []stepResult) {
	raw := map[string]stepResult{}
	for _, r := range rawRows {
		raw[strings.TrimPrefix(r.name, "raw-")] = r
	}
	fmt.Fprintf(b.out, "\nwhole pipeline against its raw stages chained (the raw chain: the same steps, one process after the other; goal: %d %% or more of the raw chain's rate and of its CPU per event):\n", rawChainGoal)
	w := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "step\toffered ev/s\tpipeline delivered ev/s\traw delivered ev/s\trate share\tpipeline CPU µs/ev\traw CPU µs/ev\tCPU share\t")
	last := map[string][2]stepResult{}
	for _, p := range pipelineRows {
		r, ok := raw[p.name]
		if !ok {
			fmt.Fprintf(w, "%s\t%d\t%.0f\t-\t-\t%.0f\t-\t-\t\n", p.name, p.load.rate, p.delivered(), p.cpuPerEvent())
			continue
		}
		fmt.Fprintf(w, "%s\t%d\t%.0f\t%.0f\t%s\t%.0f\t%.0f\t%s\t\n", p.name, p.load.rate, p.delivered(), r.delivered(),
			percent(p.delivered(), r.delivered()), p.cpuPerEvent(), r.cpuPerEvent(), percent(r.cpuPerEvent(), p.cpuPerEvent()))
		if kind, _, found := strings.Cut(p.name, "-"); found && kind != "warm" {
			last[kind] = [2]stepResult{p, r}
		}
	}
	_ = w.Flush()
	fmt.Fprintln(b.out, "delivered: stored events a badge covered, per second from the start of the load to the end of the drain (both are capped by the offered rate); rate share: the pipeline's as a share of the raw chain's; CPU share: the raw chain's CPU per event as a share of the pipeline's")
	for _, kind := range []string{"single", "batch"} {
		pr, ok := last[kind]
		if !ok {
			continue
		}
		p, r := pr[0], pr[1]
		fmt.Fprintf(b.out, "BenchmarkPipelineVsRawChain/%s\t1\t%.0f offered-events/s\t%.0f pipeline-events/s\t%.0f raw-events/s\t%.1f pipeline-cpu-µs/event\t%.1f raw-cpu-µs/event\n",
			kind, float64(p.load.rate), p.delivered(), r.delivered(), p.cpuPerEvent(), r.cpuPerEvent())
	}
}

// latencySlack is how far over the coalescing window the p99 event-to-push
// latency may go (issue: p99 <= window + 50 ms at 10,000 events/s, or at
// the highest rate the machine holds).
const latencySlack = 50 * time.Millisecond

// withinLatency returns the highest offered rate among rows (steps of one
// kind) at which the step held and its p99 event-to-push latency was at
// most window + latencySlack, and that p99; 0 when none.
func withinLatency(rows []stepResult, window time.Duration) (rate int, p99 time.Duration) {
	for _, r := range rows {
		q := benchtest.Percentile(r.lat, 0.99)
		if r.holds(window) && q <= window+latencySlack && r.load.rate > rate {
			rate, p99 = r.load.rate, q
		}
	}
	return rate, p99
}

// highestHeld returns the highest offered rate among rows at which the
// step held; 0 when none.
func highestHeld(rows []stepResult, window time.Duration) int {
	rate := 0
	for _, r := range rows {
		if r.holds(window) {
			rate = max(rate, r.load.rate)
		}
	}
	return rate
}

// compareLatency prints, for each kind of request, the highest rate at
// which the pipeline met the latency goal against the highest rate the raw
// chain held (the machine's), and one benchmark line for make bench's
// table: the goal is met when the pipeline meets it at every rate the raw
// chain holds.
func (b *bench) compareLatency(pipelineRows, rawRows []stepResult) {
	window := b.windowDuration()
	fmt.Fprintf(b.out, "\nlatency goal: p99 event to push <= window + %s = %s, at the highest rate the raw chain holds:\n", latencySlack, window+latencySlack)
	for _, kind := range []string{"single", "batch"} {
		p, r := stepsOf(pipelineRows, kind), stepsOf(rawRows, "raw-"+kind)
		if len(p) == 0 || len(r) == 0 {
			continue
		}
		rate, p99 := withinLatency(p, window)
		held := highestHeld(r, window)
		fmt.Fprintf(b.out, "  %s: the pipeline met it up to %d events/s offered (p99 %s ms there); the raw chain held up to %d: %s\n",
			kind, rate, ms(p99), held, percent(float64(rate), float64(held)))
		fmt.Fprintf(b.out, "BenchmarkPipelineLatencyGoal/%s\t1\t%d pipeline-events/s\t%d raw-events/s\t%.1f p99-ms\n", kind, rate, held, float64(p99.Microseconds())/1000)
	}
}

// stepsOf returns the rows of steps named prefix-<rate>.
func stepsOf(rows []stepResult, prefix string) []stepResult {
	var out []stepResult
	for _, r := range rows {
		if rest, ok := strings.CutPrefix(r.name, prefix+"-"); ok && rest != "" && rest[0] >= '0' && rest[0] <= '9' {
			out = append(out, r)
		}
	}
	return out
}

// percent is a as a percentage of b, or "-" when b is 0.
func percent(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}
