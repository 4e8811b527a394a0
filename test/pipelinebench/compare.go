package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
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

// percent is a as a percentage of b, or "-" when b is 0.
func percent(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}
