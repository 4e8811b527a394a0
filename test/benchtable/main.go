// Command benchtable reads the output of make bench's go test -bench steps
// (on standard input) and prints one table: each stage, its figure, the
// anchor it is measured against in the same run, the ratio, the goal and
// whether it is met. It asserts nothing and always exits 0 when it could
// read its input: a stage whose benchmark did not run is "not run".
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
)

// results are the metrics of each benchmark, by name without the -N
// GOMAXPROCS suffix.
type results map[string]map[string]float64

// benchLine is a result line: name, iterations, then value-unit pairs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parse reads go test -bench output.
func parse(r io.Reader) (results, error) {
	out := results{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		fields := strings.Fields(m[2])
		metrics := map[string]float64{}
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				break
			}
			metrics[fields[i+1]] = v
		}
		out[m[1]] = metrics
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the benchmark output: %w", err)
	}
	return out, nil
}

// row is one line of the table.
type row struct {
	stage, figure, anchor, ratio, goal, result string
}

// stage is how one row is read from the results.
type stage struct {
	name  string
	bench string
	// read returns the figure, the anchor, the ratio in percent of the
	// anchor (higher is better) and whether the metrics were there.
	read func(m map[string]float64) (figure, anchor string, ratio float64, ok bool)
	goal float64 // percent
}

// share reads a ratio metric the benchmark reports itself, with the two
// rates it is made of.
func share(ratio, figure, anchor, unit string) func(map[string]float64) (string, string, float64, bool) {
	return func(m map[string]float64) (string, string, float64, bool) {
		r, ok := m[ratio]
		if !ok {
			return "", "", 0, false
		}
		return fmt.Sprintf("%.0f %s", m[figure], unit), fmt.Sprintf("%.0f %s", m[anchor], unit), r, true
	}
}

// rateShare compares two rates the benchmark reports: the figure's as a
// percent of the anchor's.
func rateShare(figure, anchor, unit string) func(map[string]float64) (string, string, float64, bool) {
	return func(m map[string]float64) (string, string, float64, bool) {
		f, okF := m[figure]
		a, okA := m[anchor]
		if !okF || !okA || a == 0 {
			return "", "", 0, false
		}
		return fmt.Sprintf("%.0f %s", f, unit), fmt.Sprintf("%.0f %s", a, unit), 100 * f / a, true
	}
}

// cpuShare compares CPU per event: the anchor's as a percent of the
// figure's (lower CPU is better, so 100 % means as cheap as the anchor).
func cpuShare(figure, anchor, unit string) func(map[string]float64) (string, string, float64, bool) {
	return func(m map[string]float64) (string, string, float64, bool) {
		f, okF := m[figure]
		a, okA := m[anchor]
		if !okF || !okA || f == 0 {
			return "", "", 0, false
		}
		return fmt.Sprintf("%.1f %s", f, unit), fmt.Sprintf("%.1f %s", a, unit), 100 * a / f, true
	}
}

// latency compares p99 event-to-push with the coalescing window plus
// 50 ms: the ratio is the bound as a percent of the p99 (at least 100 %
// meets it).
func latency(windowMS float64) func(map[string]float64) (string, string, float64, bool) {
	return func(m map[string]float64) (string, string, float64, bool) {
		p99, ok := m["p99-ms"]
		if !ok || p99 == 0 {
			return "", "", 0, false
		}
		bound := windowMS + 50
		return fmt.Sprintf("p99 %.1f ms", p99), fmt.Sprintf("window + 50 = %.0f ms", bound), 100 * bound / p99, true
	}
}

// stages are the rows of make bench's table, in its order.
var stages = []stage{
	{"ingest, batches of 100 (vs raw publish)", "BenchmarkIngestVsRaw", share("batch-%-of-raw", "batch-events/s", "raw-events/s", "ev/s"), 90},
	{"ingest, batches of 100 (vs bare handler)", "BenchmarkIngestVsRaw", share("batch-%-of-bare", "batch-events/s", "bare-batch-events/s", "ev/s"), 90},
	{"ingest, one event per request", "BenchmarkIngestVsRaw", share("single-%-of-bare", "single-events/s", "bare-single-events/s", "ev/s"), 90},
	{"ingest, batches of 100, CPU per event (vs raw publish)", "BenchmarkIngestVsRaw", cpuShare("batch-cpu-µs/event", "raw-cpu-µs/event", "µs"), 90},
	{"ingest, batches of 100, CPU per event (vs bare handler)", "BenchmarkIngestVsRaw", cpuShare("batch-cpu-µs/event", "bare-batch-cpu-µs/event", "µs"), 90},
	{"ingest, one event per request, CPU per event", "BenchmarkIngestVsRaw", cpuShare("single-cpu-µs/event", "bare-single-cpu-µs/event", "µs"), 90},
	{"dispatcher, rate", "BenchmarkDispatcherVsRaw", share("%-of-raw", "dispatcher-events/s", "raw-events/s", "ev/s"), 90},
	{"dispatcher, CPU per event", "BenchmarkDispatcherVsRaw", cpuShare("dispatcher-cpu-µs/event", "raw-cpu-µs/event", "µs"), 90},
	{"event-to-push, 300 ms window", "BenchmarkEventToPushLatency/window=300ms", latency(300), 100},
	{"event-to-push, 20 ms window", "BenchmarkEventToPushLatency/window=20ms", latency(20), 100},
	{"relay, rate", "BenchmarkRelayVsForward", share("%-of-anchor", "relay-notifications/s", "anchor-notifications/s", "n/s"), 80},
	{"relay, CPU per notification", "BenchmarkRelayVsForward", cpuShare("relay-cpu-µs/notification", "anchor-cpu-µs/notification", "µs"), 80},
	// The whole pipeline (pushctl standalone) against the raw chain, its
	// stages' anchors chained in one process (test/pipelinebench), at the
	// highest offered rate both ran.
	{"whole pipeline, one event per request, rate", "BenchmarkPipelineVsRawChain/single", rateShare("pipeline-events/s", "raw-events/s", "ev/s"), 50},
	{"whole pipeline, one event per request, CPU", "BenchmarkPipelineVsRawChain/single", cpuShare("pipeline-cpu-µs/event", "raw-cpu-µs/event", "µs"), 50},
	{"whole pipeline, batches of 100, rate", "BenchmarkPipelineVsRawChain/batch", rateShare("pipeline-events/s", "raw-events/s", "ev/s"), 50},
	{"whole pipeline, batches of 100, CPU", "BenchmarkPipelineVsRawChain/batch", cpuShare("pipeline-cpu-µs/event", "raw-cpu-µs/event", "µs"), 50},
	// The highest offered rate at which the pipeline met the latency goal
	// (p99 event to push <= window + 50 ms) against the highest rate the
	// raw chain held, the machine's: met when it is met at every rate the
	// machine holds (issue: at 10,000 events/s, or the highest the machine
	// holds).
	{"whole pipeline, one event per request, highest rate at p99 ≤ window + 50 ms (vs the raw chain's highest)", "BenchmarkPipelineLatencyGoal/single", rateShare("pipeline-events/s", "raw-events/s", "ev/s"), 100},
	{"whole pipeline, batches of 100, highest rate at p99 ≤ window + 50 ms (vs the raw chain's highest)", "BenchmarkPipelineLatencyGoal/batch", rateShare("pipeline-events/s", "raw-events/s", "ev/s"), 100},
	// The hand-written fast paths against encoding/json, end to end: each
	// stays only while it is worth at least 10 % (issue: fast paths).
	{"event fast path, dispatcher rate (vs encoding/json)", "BenchmarkDispatcherVsRaw", rateShare("dispatcher-events/s", "library-events/s", "ev/s"), 110},
	{"event fast path, dispatcher CPU (vs encoding/json)", "BenchmarkDispatcherVsRaw", cpuShare("dispatcher-cpu-µs/event", "library-cpu-µs/event", "µs"), 110},
}

// table reads every stage from res.
func table(res results) []row {
	var rows []row
	for _, s := range stages {
		m, ran := res[s.bench]
		figure, anchor, ratio, ok := "", "", 0.0, false
		if ran {
			figure, anchor, ratio, ok = s.read(m)
		}
		r := row{stage: s.name, goal: fmt.Sprintf("≥ %.0f%%", s.goal)}
		switch {
		case !ok:
			r.figure, r.anchor, r.ratio, r.result = "-", "-", "-", "not run"
		default:
			r.figure, r.anchor, r.ratio = figure, anchor, fmt.Sprintf("%.0f%%", ratio)
			r.result = "PASS"
			if ratio < s.goal {
				r.result = "below"
			}
		}
		rows = append(rows, r)
	}
	return rows
}

func main() {
	res, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tFIGURE\tANCHOR (same run)\tRATIO\tGOAL\tRESULT")
	for _, r := range table(res) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.stage, r.figure, r.anchor, r.ratio, r.goal, r.result)
	}
	_ = tw.Flush()
}
