package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/benchtest"
	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/storage"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// The scale bench's settings, from the environment.
const (
	envScaleUsers  = "PUSHPROXY_SCALE_USERS"  // users, one device each (1,000,000)
	envScaleActive = "PUSHPROXY_SCALE_ACTIVE" // per cent of them that get mail (10)
	envScaleRate   = "PUSHPROXY_SCALE_RATE"   // events per second offered (2,000)
)

// Goals of make bench-scale (issue: a million devices in bounded memory).
const (
	goalDispatcherRSS = 256 << 20
	goalStateBytes    = 200
	goalDeviceBytes   = 300
	scaleBatch        = 100 // events per ingest request
)

// BenchmarkScale is make bench-scale: the deployment of the chaos tests
// (3 NATS nodes, ingest, 3 dispatchers, the relay, an APNs provider; each
// an OS process) with a million users, one device each, written straight
// into the subscriptions bucket the way ingest's API stores them, after
// switching the writers to the compact encoding (as pushctl storage
// encoding compact does; the dispatchers follow within seconds). Mail
// then reaches a random tenth of the users, one event each through
// ingest's native API, until every one of them has its badge. It reports
// each dispatcher's and ingest's resident memory (now and at its peak)
// before and after the traffic, and the bytes per user state and per
// subscription the buckets hold. It never asserts on time or memory.
func BenchmarkScale(b *testing.B) {
	users := benchEnvInt(b, envScaleUsers, 1_000_000)
	activePct := benchEnvInt(b, envScaleActive, 10)
	rate := benchEnvInt(b, envScaleRate, 2000)
	ctx, bin := benchBinaries(b)
	s, err := startSystem(ctx, b, bin, systemOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("scale: %d users with one device each, mail to %d%% of them at %d events/s", users, activePct, rate)

	start := time.Now()
	if err := writeSubscriptions(ctx, b, s, users); err != nil {
		b.Fatal(err)
	}
	b.Logf("scale: %d subscriptions written in %s (%.0f/s)", users, time.Since(start).Round(time.Millisecond),
		float64(users)/time.Since(start).Seconds())
	// The dispatchers have seen every subscription go by on their watch;
	// what they hold is what this measures.
	time.Sleep(5 * time.Second)
	idle := s.memory()

	active := rand.Perm(users)[:users*activePct/100]
	start = time.Now()
	if err := sendMail(ctx, s, active, rate); err != nil {
		b.Fatal(err)
	}
	sent := time.Since(start)
	if err := waitBadges(ctx, s, active, 10*time.Minute); err != nil {
		b.Fatal(err)
	}
	b.Logf("scale: %d events sent in %s; every badge pushed %s after the first", len(active), sent.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
	busy := s.memory()

	state, err := brokertest.ReadBucketUsage(ctx, s.js, broker.BucketUnread)
	if err != nil {
		b.Fatal(err)
	}
	devices, err := brokertest.ReadBucketUsage(ctx, s.js, broker.BucketSubscriptions)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprint(os.Stdout, scaleReport(users, len(active), idle, busy, state, devices))
	worst := int64(0)
	for _, m := range busy {
		if strings.HasPrefix(m.name, "dispatcher") {
			worst = max(worst, m.hwm)
		}
	}
	b.ReportMetric(float64(worst)/(1<<20), "dispatcher-peak-MiB")
	b.ReportMetric(state.PerEntry(), "B/user-state")
	b.ReportMetric(devices.PerEntry(), "B/subscription")
}

// benchEnvInt is envInt for a benchmark, which a bad value ends.
func benchEnvInt(b *testing.B, name string, def int) int {
	n, err := envInt(name, def)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// benchBinaries returns a context that ends with b and the folder of the
// binaries the deployment runs (built, or PUSHPROXY_CHAOS_BIN).
func benchBinaries(b *testing.B) (context.Context, string) {
	var bins buildOnce
	bin, err := bins.get(b.Context(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return b.Context(), bin
}

// scaleUser is the name of user i; scaleDevice its device token.
func scaleUser(i int) string { return "user" + strconv.Itoa(i) + "@" + fabrikam.org }

// The raw chain of the cluster latency bench derives the device from the
// user's name the same way (benchtest.UserNumber).
func scaleDevice(i int) string { return benchtest.DeviceToken(i) }

// writeSubscriptions stores one device for each of n users, as
// subscriptions.Store.Put creates them (the encoding the storage settings
// say, the create's revision check), with asynchronous publishes.
func writeSubscriptions(ctx context.Context, b testing.TB, s *system, n int) error {
	keyer, err := broker.Keyer(ctx, s.js)
	if err != nil {
		return err
	}
	enc, err := storageEncoding(ctx, s.js)
	if err != nil {
		return err
	}
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	last := time.Now()
	for i := range n {
		sub := subscriptions.Subscription{Tenant: fabrikam.org, User: scaleUser(i), AppID: fabrikam.app, DeviceID: scaleDevice(i),
			Platform: subscriptions.PlatformAPNS, Options: subscriptions.OptionEmail, Language: "en-GB", LastSubscriptionUpdate: now}
		sub.Normalize()
		data, err := subscriptions.Encode(sub, enc)
		if err != nil {
			return fmt.Errorf("encoding a subscription: %w", err)
		}
		key := subscriptions.Key(keyer.UserKey(sub.Tenant, sub.User), sub.AppID, sub.DeviceID)
		msg := &nats.Msg{Subject: "$KV." + broker.BucketSubscriptions + "." + key, Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0") // as KeyValue.Create
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return fmt.Errorf("writing subscription %d: %w", i, err)
		}
		if i%2048 == 2047 {
			// A window of publishes at a time: the cluster sets the pace.
			if err := stored(ctx, js); err != nil {
				return err
			}
		}
		if time.Since(last) > 10*time.Second {
			b.Logf("scale: %d of %d subscriptions written", i, n)
			last = time.Now()
		}
	}
	return stored(ctx, js)
}

// storageEncoding switches the deployment's writers to the compact
// encoding (pushctl storage encoding compact) and returns it.
func storageEncoding(ctx context.Context, js jetstream.JetStream) (storage.Encoding, error) {
	kv, err := js.KeyValue(ctx, broker.BucketConfig)
	if err != nil {
		return "", fmt.Errorf("opening bucket %s: %w", broker.BucketConfig, err)
	}
	st, _, err := storage.SetEncoding(ctx, kv, storage.Compact, storage.ByOperator, time.Now())
	if err != nil {
		return "", err
	}
	return st.Encoding, nil
}

// stored waits until every asynchronous publish of js is acknowledged.
func stored(ctx context.Context, js jetstream.JetStream) error {
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("subscriptions not stored within a minute")
	}
}

// sendMail sends one event for each user of active through ingest's
// native API, scaleBatch to a request, at rate events a second.
func sendMail(ctx context.Context, s *system, active []int, rate int) error {
	return sendEvents(ctx, s, len(active), rate, func(j int) map[string]any {
		i := active[j]
		return map[string]any{"user": scaleUser(i), "kind": "new", "unread": 1, "change_id": "scale-" + strconv.Itoa(i),
			"occurred_at": time.Now().UTC().Format(time.RFC3339Nano)}
	}, nil)
}

// sendEvents sends n events through ingest's native API, scaleBatch to a
// request, at rate events a second, 16 requests at most in flight; event
// makes the j-th. sent, when not nil, is told when the request of events
// [from, to) was first sent. A request refused for a while (5xx, 429) is
// sent again.
func sendEvents(ctx context.Context, s *system, n, rate int, event func(j int) map[string]any, sent func(from, to int, at time.Time)) error {
	c := newIngestClient(s.ingestAddr, s.tenant)
	tick := time.NewTicker(time.Duration(float64(time.Second) * scaleBatch / float64(rate)))
	defer tick.Stop()
	var wg sync.WaitGroup
	var failed atomic.Value
	sem := make(chan struct{}, 16)
	for from := 0; from < n; from += scaleBatch {
		if err, _ := failed.Load().(error); err != nil {
			break
		}
		<-tick.C
		to := min(from+scaleBatch, n)
		evs := make([]map[string]any, 0, to-from)
		for j := from; j < to; j++ {
			evs = append(evs, event(j))
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if sent != nil {
				sent(from, to, time.Now())
			}
			err := retryTransient(ctx, func() (bool, error) {
				code, data, _, err := c.do(ctx, http.MethodPost, "/v1/events", evs)
				if err != nil || code >= 500 || code == http.StatusTooManyRequests {
					return false, answerError("sending mail", code, data, err)
				}
				if code != http.StatusOK {
					return true, answerError("sending mail", code, data, nil)
				}
				return true, nil
			})
			if err != nil {
				failed.CompareAndSwap(nil, err)
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return err
	}
	return nil
}

// waitBadges waits until every active user's device got its badge.
func waitBadges(ctx context.Context, s *system, active []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for _, i := range active {
			if b, ok := s.provider.lastBadge(scaleDevice(i)); !ok || b.Count != 1 {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d badges not pushed within %s", missing, len(active), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// procMemory is a process's resident memory, now and at its peak.
type procMemory struct {
	name     string
	rss, hwm int64
}

// memory reads the resident memory of ingest and the dispatchers.
func (s *system) memory() []procMemory {
	var out []procMemory
	for _, p := range append([]*proc{s.ingest}, s.dispatchers...) {
		m := procMemory{name: p.name}
		p.mu.Lock()
		cmd := p.cmd
		p.mu.Unlock()
		if cmd != nil && cmd.Process != nil {
			m.rss, m.hwm = readStatus(cmd.Process.Pid)
		}
		out = append(out, m)
	}
	return out
}

// readStatus reads VmRSS and VmHWM of a process, in bytes (0 when unknown).
func readStatus(pid int) (rss, hwm int64) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// scaleReport is the bench's table.
func scaleReport(users, active int, idle, busy []procMemory, state, devices brokertest.BucketUsage) string {
	var sb strings.Builder
	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "below"
	}
	fmt.Fprintf(&sb, "\nbench-scale: %d users, one device each; mail to %d of them\n\n", users, active)
	w := tabwriter.NewWriter(&sb, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "process\tRSS, subscriptions loaded\tRSS after the mail\tpeak RSS\tgoal\t")
	for i := range busy {
		goal, ok := "", ""
		if strings.HasPrefix(busy[i].name, "dispatcher") {
			goal = "≤ " + mib(goalDispatcherRSS) + " "
			ok = verdict(busy[i].hwm <= goalDispatcherRSS)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s%s\t\n", busy[i].name, mib(idle[i].rss), mib(busy[i].rss), mib(busy[i].hwm), goal, ok)
	}
	fmt.Fprintln(w, "\t\t\t\t\t")
	fmt.Fprintln(w, "bucket\tentries\tbytes\tper entry\tgoal\t")
	fmt.Fprintf(w, "unread (user states)\t%d\t%d\t%.0f B\t≤ %d B %s\t\n", state.Entries, state.Bytes, state.PerEntry(), goalStateBytes,
		verdict(state.PerEntry() <= goalStateBytes))
	fmt.Fprintf(w, "subscriptions\t%d\t%d\t%.0f B\t≤ %d B %s\t\n", devices.Entries, devices.Bytes, devices.PerEntry(), goalDeviceBytes,
		verdict(devices.PerEntry() <= goalDeviceBytes))
	w.Flush()
	return sb.String()
}

// scaleOutRun is one deployment of BenchmarkScaleOut.
type scaleOutRun struct {
	dispatchers, partitions int
	// rate is events/s from the first event stored to the last one
	// acknowledged; cpu the dispatchers' CPU time per event, in all, and
	// busy the same less what they spend when idle (idle, CPU seconds a
	// second, all dispatchers together); perRequest the pushes per relay
	// request and perEvent the pushes per event, all dispatchers
	// together; syscalls and switches the
	// dispatchers' system calls (reads and writes) and context switches
	// per event; gcCycles their garbage collections during the run;
	// peakRSS the largest peak resident set of one of them, in MiB.
	rate, cpu, busy, idle, perRequest, perEvent, syscalls, switches, gcCycles, peakRSS float64
}

// busyPerPush is the run's CPU per push, less idle; 0 without pushes.
func (r scaleOutRun) busyPerPush() float64 {
	if r.perEvent == 0 {
		return 0
	}
	return r.busy / r.perEvent
}

// scaleOutIdle is how long BenchmarkScaleOut measures the dispatchers'
// idle CPU.
const scaleOutIdle = 5 * time.Second

// BenchmarkScaleOut is the second part of make bench-scale: the chaos
// tests' deployment with 1, 2 and 3 dispatchers on 8 partitions, and with
// one dispatcher on 2, 4, 8 and 16 partitions. Each run stores a backlog
// of events (every one a new count for one of 10,000 users with a device)
// straight into MAIL and measures the rate at which the dispatchers
// acknowledge them and the CPU time they spend per event, read from
// /proc, in all and less what the dispatchers spend when idle (measured
// for 5 s before). It reports the latter of each run against one
// dispatcher on 8 partitions (the goal: within 10 % up to 3
// dispatchers), with the system calls, context switches, garbage
// collections and peak memory that go with it; PUSHPROXY_SCALEOUT_PROFILES
// names a folder for a CPU profile of each dispatcher during each run. It
// never asserts on time.
//
// The default backlog, 24 events per user, measures the steady state: a
// run of 4 per user (40,000 events, about 7 s) is mostly each user's first
// reads, and the second dispatcher's share varied from 103 to 138 % from
// run to run.
func BenchmarkScaleOut(b *testing.B) {
	events := benchEnvInt(b, "PUSHPROXY_SCALEOUT_EVENTS", 240_000)
	const users = 10_000
	ctx, bin := benchBinaries(b)
	var runs []scaleOutRun
	for _, shape := range [][2]int{{1, 8}, {2, 8}, {3, 8}, {1, 2}, {1, 4}, {1, 16}} {
		b.Run(fmt.Sprintf("dispatchers=%d/partitions=%d", shape[0], shape[1]), func(b *testing.B) {
			r, err := scaleOut(ctx, b, bin, shape[0], shape[1], users, events)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r.rate, "events/s")
			b.ReportMetric(r.cpu, "dispatcher-CPU-µs/event")
			b.ReportMetric(r.busy, "less-idle-µs/event")
			b.ReportMetric(r.perRequest, "pushes/relay-request")
			b.ReportMetric(r.perEvent, "pushes/event")
			b.ReportMetric(r.syscalls, "syscalls/event")
			b.ReportMetric(r.switches, "switches/event")
			runs = append(runs, r)
		})
	}
	fmt.Fprint(os.Stdout, scaleOutReport(runs, events))
}

// scaleOut runs one deployment of BenchmarkScaleOut.
func scaleOut(ctx context.Context, b *testing.B, bin string, dispatchers, partitions, users, events int) (scaleOutRun, error) {
	r := scaleOutRun{dispatchers: dispatchers, partitions: partitions}
	s, err := startSystem(ctx, b, bin, systemOptions{dispatchers: dispatchers, partitions: partitions})
	if err != nil {
		return r, err
	}
	if err := writeSubscriptions(ctx, b, s, users); err != nil {
		return r, err
	}
	if err := s.waitShared(ctx, partitions, time.Minute); err != nil {
		return r, err
	}
	keyer, err := broker.Keyer(ctx, s.js)
	if err != nil {
		return r, err
	}
	// What the dispatchers spend when idle (heartbeats, gauges, timers),
	// to tell it from what the events cost.
	idleFrom, idleUsage := time.Now(), s.dispatcherUsage()
	time.Sleep(scaleOutIdle)
	r.idle = float64(s.dispatcherUsage().sub(idleUsage).cpu) / float64(time.Since(idleFrom))
	profiled := s.profileDispatchers(ctx, b, fmt.Sprintf("d%d-p%d", dispatchers, partitions), events)
	before := s.dispatcherUsage()
	gcBefore := s.scrapeDispatchers(ctx)["go_gc_duration_seconds_count"]
	start := time.Now()
	if err := publishBacklog(ctx, s, keyer, users, events); err != nil {
		return r, err
	}
	if err := s.waitAcknowledged(ctx, 5*time.Minute); err != nil {
		return r, err
	}
	took := time.Since(start)
	r.rate = float64(events) / took.Seconds()
	spent := s.dispatcherUsage().sub(before)
	r.cpu = float64(spent.cpu.Microseconds()) / float64(events)
	r.busy = (float64(spent.cpu.Microseconds()) - r.idle*float64(took.Microseconds())) / float64(events)
	r.syscalls = float64(spent.syscalls) / float64(events)
	r.switches = float64(spent.switches) / float64(events)
	m := s.scrapeDispatchers(ctx)
	if m["relay_requests_total"] > 0 {
		r.perRequest = m["pushes_total"] / m["relay_requests_total"]
	}
	r.perEvent = m["pushes_total"] / float64(events)
	r.gcCycles = m["go_gc_duration_seconds_count"] - gcBefore
	r.peakRSS = float64(spent.peakRSS) / (1 << 20)
	profiled()
	return r, nil
}

// scaleOutProfiledRate is the rate at which BenchmarkScaleOut's profiles
// assume the events are acknowledged, so that they end before the run
// does: runs go at 4,000 to 7,000 events/s on 2 cores.
const scaleOutProfiledRate = 8000

// profileDispatchers saves a CPU profile of each dispatcher, from now for
// the time events take at scaleOutProfiledRate, as
// <name>-<dispatcher>.pprof in the folder PUSHPROXY_SCALEOUT_PROFILES
// names (without it, nothing). The returned function waits for them.
func (s *system) profileDispatchers(ctx context.Context, b *testing.B, name string, events int) (wait func()) {
	dir := os.Getenv("PUSHPROXY_SCALEOUT_PROFILES")
	if dir == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	for i, debug := range s.dispatcherDebugAddrs {
		path := filepath.Join(dir, fmt.Sprintf("%s-%s.pprof", name, dispatcherID(i)))
		wg.Go(func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", debug, max(1, events/scaleOutProfiledRate))
			if err := benchtest.SaveProfile(ctx, http.DefaultClient, url, path); err != nil {
				b.Logf("profiling %s: %v", dispatcherID(i), err)
				return
			}
			b.Logf("CPU profile of %s: %s", dispatcherID(i), path)
		})
	}
	return wg.Wait
}

// publishBacklog stores events for random users straight into MAIL, each
// a new count, as ingest would (subject, message id).
func publishBacklog(ctx context.Context, s *system, keyer *events.Keyer, users, n int) error {
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	counts := make([]int, users)
	for i := range n {
		u := rand.IntN(users)
		counts[u]++
		now := time.Now().UTC()
		ev := events.Event{Tenant: fabrikam.org, User: scaleUser(u), Kind: events.KindNew, Count: 1, Unread: &counts[u],
			ChangeID: "scaleout-" + strconv.Itoa(i), OccurredAt: now, ReceivedAt: now}
		ev.Normalize()
		data, err := ev.Encode()
		if err != nil {
			return fmt.Errorf("encoding an event: %w", err)
		}
		msg := &nats.Msg{Subject: keyer.Subject(ev.Tenant, ev.User), Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, keyer.MsgID(&ev))
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return fmt.Errorf("publishing event %d: %w", i, err)
		}
		if i%2048 == 2047 {
			if err := stored(ctx, js); err != nil {
				return err
			}
		}
	}
	return stored(ctx, js)
}

// waitShared waits until the dispatchers' heartbeats show every partition
// owned by exactly one of them.
func (s *system) waitShared(ctx context.Context, partitions int, timeout time.Duration) error {
	return waitUntil(ctx, "the partitions shared out", timeout, 200*time.Millisecond, func(context.Context) (bool, error) {
		owners := map[int]int{}
		for i := range s.dispatchers {
			for _, p := range s.owned(dispatcherID(i)) {
				owners[p]++
			}
		}
		for p := range partitions {
			if owners[p] != 1 {
				return false, nil
			}
		}
		return true, nil
	})
}

// waitAcknowledged waits until no consumer of MAIL has events pending or
// unacknowledged.
func (s *system) waitAcknowledged(ctx context.Context, timeout time.Duration) error {
	return waitUntil(ctx, "every event acknowledged", timeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err := s.js.Stream(ctx, streamMail)
		if err != nil {
			return false, nil
		}
		infos := st.ListConsumers(ctx)
		for info := range infos.Info() {
			if info.NumPending > 0 || info.NumAckPending > 0 {
				return false, nil
			}
		}
		return infos.Err() == nil, nil
	})
}

// usage is what processes have used so far, read from /proc.
type usage struct {
	cpu time.Duration
	// syscalls counts read and write system calls (/proc/<pid>/io);
	// switches the context switches of its threads alive now, voluntary
	// or not (/proc/<pid>/task/*/status).
	syscalls, switches int64
	// peakRSS is the largest resident set (VmHWM) of any of the
	// processes, in bytes.
	peakRSS int64
}

// sub is what was used between an earlier reading and u; the peak is u's.
func (u usage) sub(earlier usage) usage {
	return usage{cpu: u.cpu - earlier.cpu, syscalls: u.syscalls - earlier.syscalls, switches: u.switches - earlier.switches, peakRSS: u.peakRSS}
}

// dispatcherUsage is what the running dispatchers used so far, together.
func (s *system) dispatcherUsage() usage {
	return procsUsage(s.dispatchers)
}

// procsUsage is what the running processes of procs used so far,
// together.
func procsUsage(procs []*proc) usage {
	var total usage
	for _, p := range procs {
		if p == nil {
			continue
		}
		p.mu.Lock()
		cmd := p.cmd
		p.mu.Unlock()
		if cmd != nil && cmd.Process != nil {
			u := processUsage(cmd.Process.Pid)
			total.cpu += u.cpu
			total.syscalls += u.syscalls
			total.switches += u.switches
			total.peakRSS = max(total.peakRSS, u.peakRSS)
		}
	}
	return total
}

// processUsage reads a process's user and system time, its read and
// write system calls and its context switches from /proc (0 for what is
// unknown).
func processUsage(pid int) usage {
	dir := "/proc/" + strconv.Itoa(pid) + "/"
	var u usage
	if data, err := os.ReadFile(dir + "stat"); err == nil {
		// The fields after the command name, which is in parentheses.
		rest := string(data)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		if f := strings.Fields(rest); len(f) >= 13 {
			utime, _ := strconv.ParseInt(f[11], 10, 64)
			stime, _ := strconv.ParseInt(f[12], 10, 64)
			const ticksPerSecond = 100 // USER_HZ on Linux
			u.cpu = time.Duration(utime+stime) * time.Second / ticksPerSecond
		}
	}
	u.syscalls = sumFields(dir+"io", "syscr:", "syscw:")
	u.peakRSS = sumFields(dir+"status", "VmHWM:") << 10 // in kB
	tasks, _ := os.ReadDir(dir + "task")
	for _, t := range tasks {
		u.switches += sumFields(dir+"task/"+t.Name()+"/status", "voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")
	}
	return u
}

// sumFields adds the numbers that follow the given names at the start of
// lines of a /proc file such as io or status (a unit after the number is
// ignored).
func sumFields(path string, names ...string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var sum int64
	for line := range strings.Lines(string(data)) {
		for _, name := range names {
			if rest, ok := strings.CutPrefix(line, name); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				sum += n
			}
		}
	}
	return sum
}

// scaleOutReport is BenchmarkScaleOut's table. Beside the goal's ratio
// (CPU per event) it gives CPU per push against one dispatcher's: a run
// whose users' events fell into fewer coalescing windows pushes more per
// event, and pays for it per event.
func scaleOutReport(runs []scaleOutRun, events int) string {
	var base, basePerPush float64
	for _, r := range runs {
		if r.dispatchers == 1 && r.partitions == 8 {
			base, basePerPush = r.busy, r.busyPerPush()
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nbench-scale, scale-out: a backlog of %d events, 10,000 users\n\n", events)
	w := tabwriter.NewWriter(&sb, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "dispatchers\tpartitions\tevents/s\tdispatcher CPU per event\tless idle\tidle CPU\tpushes per event\tpushes per relay request\tsyscalls per event\tcontext switches per event\tGC cycles\tpeak RSS of one\tagainst 1 dispatcher, 8 partitions\tgoal\tper push, against 1 dispatcher\t")
	for _, r := range runs {
		ratio, goal, perPush := "", "", ""
		if basePerPush > 0 {
			perPush = fmt.Sprintf("%.0f %%", 100*r.busyPerPush()/basePerPush)
		}
		if base > 0 {
			ratio = fmt.Sprintf("%.0f %%", 100*r.busy/base)
			if r.partitions == 8 && r.dispatchers > 1 {
				goal = "≤ 110 % "
				if r.busy <= 1.1*base {
					goal += "PASS"
				} else {
					goal += "below"
				}
			}
		}
		fmt.Fprintf(w, "%d\t%d\t%.0f\t%.1f µs\t%.1f µs\t%.1f %%\t%.3f\t%.1f\t%.2f\t%.2f\t%.0f\t%.0f MiB\t%s\t%s\t%s\t\n", r.dispatchers, r.partitions, r.rate, r.cpu, r.busy, 100*r.idle, r.perEvent, r.perRequest, r.syscalls, r.switches, r.gcCycles, r.peakRSS, ratio, goal, perPush)
	}
	w.Flush()
	return sb.String()
}
