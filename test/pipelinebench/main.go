// Command pipelinebench measures the whole pushproxy pipeline as one
// operator runs it: `pushctl standalone`, built from this module into a
// temporary folder and started as a process of its own (with its data in a
// temporary folder), so that the CPU time and memory it reports are the
// pipeline's alone.
//
// The bench process plays the outside world: an APNs provider API over TLS
// and HTTP/2 that records every badge, one device per user subscribed
// through ingest's subscriptions API, and mail servers reporting changes
// over HTTP at fixed offered rates, one event per request and then in
// batches. Every event sets its user's unread count one higher, so every
// event changes the badge. Per step it prints offered and achieved
// events/s, pushes/s at the provider, the event-to-push latency
// percentiles (from sending the event to the provider receiving a badge
// that covers it), the pipeline's CPU time per event and its resident and
// heap memory at the end of the step.
//
// The pipeline serves Go's profiles on a loopback port (pushctl
// standalone --debug-addr), so that each step also saves a CPU and a heap
// profile of the pipeline into the output folder the bench prints.
//
// Then, once the pipeline has stopped, the same steps run against the raw
// chain (rawchain.go, the bench's own binary started as `pipelinebench
// rawchain`): the anchors make bench measures each stage against, a bare
// publishing handler, plain durable consumers and a bare HTTPS forwarder,
// chained in one process. The bench prints the pipeline's delivered rate
// and CPU per event as shares of the raw chain's (goal: 50 % or more), and
// one benchmark line per kind of request that make bench's table reads.
// -raw=false skips it.
//
// With -soak it instead runs one steady load for that long, then stays
// idle, sampling memory, to show whether the heap reaches a plateau.
//
//	go run ./test/pipelinebench                       # the default steps (make bench)
//	go run ./test/pipelinebench -users 2000 -step 5s  # a quick look
//	go run ./test/pipelinebench -soak 4m -soak-rate 3000 -soak-idle 2m30s
//
// Every flag can also be set by the environment: -users is
// PUSHPROXY_BENCH_USERS. The bench never asserts on time: it measures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// envPrefix is the prefix of the environment variables that set the
// bench's flags (PUSHPROXY_BENCH_USERS for -users); it differs from the
// pipeline's own PUSHPROXY_ so that the process under test never reads them.
const envPrefix = "PUSHPROXY_BENCH_"

// config is what the flags fill.
type config struct {
	users        int
	singleRates  []int
	batchRates   []int
	batchSize    int
	step         time.Duration
	warmup       time.Duration
	drain        time.Duration
	concurrency  int
	window       time.Duration
	out          string
	bin          string
	pprof        bool
	top          int
	pipelineArgs []string
	keep         bool
	raw          bool

	soak       time.Duration
	soakRate   int
	soakBatch  int
	soakIdle   time.Duration
	soakSample time.Duration
}

// intList is a flag of comma-separated positive integers.
type intList []int

func (l *intList) String() string {
	parts := make([]string, len(*l))
	for i, n := range *l {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func (l *intList) Set(s string) error {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a positive integer", part)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// parseConfig reads the flags from args and, for those args does not set,
// from the environment (envPrefix and the flag's name in upper case).
func parseConfig(args []string, getenv func(string) string, errOut io.Writer) (config, error) {
	c := config{singleRates: []int{2000, 5000, 10000}, batchRates: []int{2000, 5000, 10000}}
	fs := flag.NewFlagSet("pipelinebench", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		fmt.Fprintf(errOut, "Usage: go run ./test/pipelinebench [flags]\n\nRuns pushctl standalone as its own process under offered load and prints one table per run\n(see the package documentation). Each flag can also be set by %s<FLAG> (-users: %sUSERS).\n\n", envPrefix, envPrefix)
		fs.PrintDefaults()
	}
	fs.IntVar(&c.users, "users", 10000, "users, one device each")
	fs.Var((*intList)(&c.singleRates), "single-rates", "offered rates of one-event requests, events/s, in the order tried; a step that does not hold ends the list")
	fs.Var((*intList)(&c.batchRates), "batch-rates", "offered rates of batch requests, events/s (empty: no batch steps)")
	fs.IntVar(&c.batchSize, "batch-size", 100, "events per batch request (NDJSON)")
	fs.DurationVar(&c.step, "step", 20*time.Second, "how long each step offers its load")
	fs.DurationVar(&c.warmup, "warmup", 5*time.Second, "load at the first single rate before the steps, shown as its own row (0: none)")
	fs.DurationVar(&c.drain, "drain", 30*time.Second, "how long a step waits after its load for the pushes still due")
	fs.IntVar(&c.concurrency, "concurrency", 128, "most ingest requests in flight at once")
	fs.DurationVar(&c.window, "window", 0, "the pipeline's coalescing window (--window; 0: its default, 300ms)")
	fs.StringVar(&c.out, "out", "", "folder for profiles and the pipeline's logs (default: a new one in the temporary folder)")
	fs.StringVar(&c.bin, "bin", "", "a pushctl binary to run instead of building one (it must have --debug-addr for the profiles)")
	fs.BoolVar(&c.pprof, "pprof", true, "serve the pipeline's profiles on a loopback port (--debug-addr) and save them")
	fs.IntVar(&c.top, "top", 12, "print each step's CPU by part of the pipeline and this many top functions of the last heap profile (0: neither)")
	fs.Var((*stringList)(&c.pipelineArgs), "pipeline-arg", "a flag for pushctl standalone, e.g. -pipeline-arg=--duplicate-window=1m (repeatable)")
	fs.BoolVar(&c.keep, "keep", false, "keep the pipeline's data folder (its path is printed)")
	fs.BoolVar(&c.raw, "raw", true, "after the pipeline's steps, run the same steps against the raw chain, the chain of the raw stages make bench measures each stage against (rawchain.go), and compare")
	fs.DurationVar(&c.soak, "soak", 0, "instead of the steps: one steady load for this long, sampling memory (0: off)")
	fs.IntVar(&c.soakRate, "soak-rate", 3000, "offered events/s of the soak")
	fs.IntVar(&c.soakBatch, "soak-batch", 100, "events per request during the soak (1: single events)")
	fs.DurationVar(&c.soakIdle, "soak-idle", 2*time.Minute, "how long the soak then watches the idle pipeline")
	fs.DurationVar(&c.soakSample, "soak-sample", 15*time.Second, "how often the soak samples memory")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && !set[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s: %w", name, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	switch {
	case c.users <= 0:
		return c, errors.New("-users must be positive")
	case c.batchSize <= 0 || c.soakBatch <= 0:
		return c, errors.New("batch sizes must be positive")
	case c.step <= 0 || c.drain <= 0 || c.soakSample <= 0:
		return c, errors.New("-step, -drain and -soak-sample must be positive")
	case c.concurrency <= 0:
		return c, errors.New("-concurrency must be positive")
	case c.soak == 0 && len(c.singleRates) == 0 && len(c.batchRates) == 0:
		return c, errors.New("no step to run: give -single-rates or -batch-rates")
	}
	return c, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == rawChainCommand {
		os.Exit(rawChainMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pipelinebench:", err)
		os.Exit(2)
	}
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pipelinebench:", err)
		os.Exit(1)
	}
}

// run builds and starts the pipeline, subscribes the devices and runs the
// steps (or the soak), printing to out.
func run(ctx context.Context, cfg config, out io.Writer) error {
	dir := cfg.out
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "pipelinebench-"+time.Now().Format("20060102-150405")+"-"); err != nil {
			return fmt.Errorf("creating the output folder: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("creating the output folder: %w", err)
	}
	fmt.Fprintf(out, "pipelinebench: profiles and logs in %s\n", dir)
	clock := newClock()
	prov, err := startProvider(dir, cfg.users, clock)
	if err != nil {
		return err
	}
	defer prov.close()
	work, err := os.MkdirTemp("", "pipelinebench-work-")
	if err != nil {
		return fmt.Errorf("creating the work folder: %w", err)
	}
	if cfg.keep {
		fmt.Fprintf(out, "pipelinebench: the pipeline's data stays in %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	bin := cfg.bin
	if bin == "" {
		fmt.Fprintln(out, "pipelinebench: building pushctl")
		if bin, err = buildPushctl(ctx, work); err != nil {
			return err
		}
	}
	p, err := startPipeline(ctx, pipelineOptions{bin: bin, dataDir: work + "/data", logDir: dir, window: cfg.window, pprof: cfg.pprof, args: cfg.pipelineArgs, provider: prov})
	if err != nil {
		return err
	}
	defer p.stop()
	fmt.Fprintf(out, "pipelinebench: %s %s\n", filepath.Base(bin), strings.Join(p.args, " "))
	startRSS, _ := p.rss()
	fmt.Fprintf(out, "pipelinebench: pushctl standalone pid %d, ingest %s, NATS %s, pprof %s; subscribing %d devices\n", p.pid(), p.ingestURL, p.natsURL, orNone(p.pprofURL), cfg.users)
	took, err := p.subscribe(ctx, cfg.users, cfg.concurrency)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pipelinebench: %d devices subscribed in %s; RSS %s at start, %s now\n", cfg.users, took.Round(time.Millisecond), mib(startRSS), mib(p.rssOrZero()))
	b := &bench{cfg: cfg, p: p, prov: prov, clock: clock, dir: dir, out: out, gen: newGenerator(p.ingestURL, cfg.users, cfg.concurrency, clock), parts: true}
	if cfg.soak > 0 {
		if err := b.soak(ctx); err != nil {
			return err
		}
		return stopProcess(p)
	}
	rows, err := b.steps(ctx)
	if err != nil {
		return err
	}
	// The pipeline stops before the raw chain starts, so that the two never
	// share the machine.
	if err := stopProcess(p); err != nil || !cfg.raw {
		return err
	}
	return b.againstRawChain(ctx, work+"/raw", rows)
}

// stopProcess stops p and reports an exit other than 0.
func stopProcess(p *process) error {
	if code, err := p.stop(); err != nil {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	} else if code != 0 {
		return fmt.Errorf("%s exited with %d; see %s", p.name, code, p.stderrPath)
	}
	return nil
}

// orNone is s, or "none" when empty.
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// mib formats bytes as MiB.
func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
