package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/benchtest"
	"github.com/pushproxy/pushproxy/internal/broker"
)

// soakCPUProfile bounds the CPU profile the soak takes at its start.
const soakCPUProfile = 30 * time.Second

// mibf formats bytes as MiB without a unit.
func mibf(b float64) string { return fmt.Sprintf("%.0f", b/(1<<20)) }

// soak offers one steady load for cfg.soak, then watches the idle
// pipeline for cfg.soakIdle, printing a memory sample every cfg.soakSample
// and saving heap profiles at the end of the load and after the idle time
// (the latter after a forced GC), so that a heap that keeps growing shows
// apart from one that reaches a plateau.
func (b *bench) soak(ctx context.Context) error {
	nc, err := nats.Connect(b.p.natsURL, nats.Name("pipelinebench"))
	if err != nil {
		return fmt.Errorf("connecting to the pipeline's NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	fmt.Fprintf(b.out, "pipelinebench: soak: %d events/s in requests of %d for %s, then idle for %s (coalescing window %s)\n",
		b.cfg.soakRate, b.cfg.soakBatch, b.cfg.soak, b.cfg.soakIdle, b.window())
	fmt.Fprintln(b.out, "heap: go_memstats_heap_inuse_bytes; live+garb.: heap_alloc (garbage stays counted until the next GC); not freed: heap_idle - heap_released, memory the runtime keeps from the OS")
	const row = "%6s  %-14s %13s %9s %8s %8s %10s %10s %8s %10s %10s %9s\n"
	fmt.Fprintf(b.out, row, "t s", "phase", "events stored", "pushes", "RSS MiB", "heap MiB", "live+garb.", "not freed", "objects", "goroutines", "MAIL msgs", "MAIL MiB")
	start := time.Now()
	base := b.gen.stored.Load()
	sample := func(phase string) (memory, error) {
		m, err := b.memory(ctx)
		if err != nil {
			return m, err
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var msgs, bytes uint64
		if st, err := js.Stream(sctx, broker.StreamMail); err == nil {
			if info, err := st.Info(sctx); err == nil {
				msgs, bytes = info.State.Msgs, info.State.Bytes
			}
		}
		fmt.Fprintf(b.out, row, fmt.Sprintf("%.0f", time.Since(start).Seconds()), phase,
			strconv.FormatInt(b.gen.stored.Load()-base, 10), strconv.FormatInt(b.prov.pushes.Load(), 10),
			mibf(float64(m.rss)), mibf(m.heapInuse), mibf(m.heapLive), mibf(m.heapIdle-m.heapReleased),
			fmt.Sprintf("%.2fM", m.objects/1e6), fmt.Sprintf("%.0f", m.goroutines), strconv.FormatUint(msgs, 10), mibf(float64(bytes)))
		return m, nil
	}
	before, err := sample("before")
	if err != nil {
		return err
	}
	cpu0, err := b.p.cpu()
	if err != nil {
		return err
	}
	go func() {
		secs := int(min(soakCPUProfile, b.cfg.soak).Round(time.Second) / time.Second)
		if _, err := b.p.profile(ctx, fmt.Sprintf("profile?seconds=%d", max(secs, 1)), filepath.Join(b.dir, "cpu-soak.pprof")); err != nil {
			fmt.Fprintf(b.out, "pipelinebench: soak CPU profile: %v\n", err)
		}
	}()
	done := make(chan *load, 1)
	go func() { done <- b.gen.run(ctx, b.cfg.soakRate, b.cfg.soakBatch, b.cfg.soak) }()
	tick := time.NewTicker(b.cfg.soakSample)
	defer tick.Stop()
	var l *load
	for l == nil {
		select {
		case l = <-done:
		case <-tick.C:
			if _, err := sample("load"); err != nil {
				return err
			}
		}
	}
	if _, err := b.p.profile(ctx, "heap", filepath.Join(b.dir, "heap-soak-load.pprof")); err != nil {
		return err
	}
	loaded, err := sample("end of load")
	if err != nil {
		return err
	}
	cpu1, err := b.p.cpu()
	if err != nil {
		return err
	}
	idleEnd := time.Now().Add(b.cfg.soakIdle)
	for time.Now().Before(idleEnd) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			if _, err := sample("idle"); err != nil {
				return err
			}
		}
	}
	if _, err := b.p.profile(ctx, "heap?gc=1", filepath.Join(b.dir, "heap-soak-idle.pprof")); err != nil {
		return err
	}
	idle, err := sample("idle, after GC")
	if err != nil {
		return err
	}
	lat, missing := l.latencies(b.prov, b.cfg.users)
	fmt.Fprintf(b.out, "\nsoak: offered %d events/s, achieved %.0f events/s (%d stored, %d unsent, %d failed), %d without a push; latency p50 %s p99 %s p99.9 %s ms; %.0f CPU µs/event\n",
		l.rate, l.achieved(), l.stored, l.unsent, l.failed, missing,
		ms(benchtest.Percentile(lat, 0.5)), ms(benchtest.Percentile(lat, 0.99)), ms(benchtest.Percentile(lat, 0.999)),
		float64((cpu1-cpu0).Microseconds())/float64(max(l.stored, 1)))
	perEvent := func(a, b memory) string {
		return fmt.Sprintf("RSS %+.0f B/event, heap in use %+.0f B/event", float64(b.rss-a.rss)/float64(max(l.stored, 1)), (b.heapInuse-a.heapInuse)/float64(max(l.stored, 1)))
	}
	fmt.Fprintf(b.out, "growth over the load: %s; kept after %s idle and a GC: %s\n", perEvent(before, loaded), b.cfg.soakIdle, perEvent(before, idle))
	fmt.Fprintf(b.out, "heap profiles: %s (end of load), %s (idle, after GC)\n", filepath.Join(b.dir, "heap-soak-load.pprof"), filepath.Join(b.dir, "heap-soak-idle.pprof"))
	if b.cfg.top > 0 {
		b.printTop(ctx, "heap in use at the end of the load", filepath.Join(b.dir, "heap-soak-load.pprof"), "-sample_index=inuse_space")
		b.printTop(ctx, "heap in use after idle and a GC", filepath.Join(b.dir, "heap-soak-idle.pprof"), "-sample_index=inuse_space")
	}
	return nil
}
