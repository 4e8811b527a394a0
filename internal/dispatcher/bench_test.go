package dispatcher_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/benchtest"
	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Benchmark workload: bursts of new mail for many users, interleaved in the
// stream the way several mailboxes being delivered to at once would be.
const (
	benchEvents     = 40000
	benchUsers      = 2000
	benchPartitions = 8
)

// benchEnv is a server with benchEvents events stored and a subscription per
// user, and a relay that accepts everything at once.
func benchEnv(b *testing.B) (*env, map[string][]int) {
	b.Helper()
	e := newEnv(b, brokertest.WithPartitions(benchPartitions))
	e.enableProxy()
	var names []string
	for i := range benchUsers {
		names = append(names, userName(i))
	}
	e.subscribe(names...)
	counts := map[string][]int{}
	var evs []events.Event
	burst := benchEvents / benchUsers
	// Bursts of new mail: ten mailboxes at a time each receive a burst,
	// their events interleaved in the stream.
	const concurrent = 10
	for g := 0; g < benchUsers; g += concurrent {
		for n := 1; n <= burst; n++ {
			for _, u := range names[g:min(g+concurrent, benchUsers)] {
				evs = append(evs, newEvent(u, events.KindNew, 1, events.IntPtr(n)))
				counts[u] = append(counts[u], n)
			}
		}
	}
	for len(evs) > 0 {
		n := min(len(evs), 5000)
		e.publish(evs[:n]...)
		evs = evs[n:]
	}
	return e, counts
}

func benchConfig() dispatcher.Config {
	cfg := testConfig()
	cfg.Coalesce = coalesce.Config{Window: 5 * time.Millisecond, Debounce: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}
	cfg.AckWait = 30 * time.Second
	cfg.PinnedTTL = 10 * time.Second
	cfg.MetricsInterval = 5 * time.Second
	return cfg
}

// trial is the outcome of one benchmark run: wall time, the process's CPU
// time (server, dispatcher and test relay together: they share the
// machine), and pushes sent.
type trial struct {
	took, cpu time.Duration
	pushes    int
}

// dispatcherTrial runs the dispatcher with cfg over a fresh benchEnv and
// measures the time from its workers starting to the last event acked;
// name names the window's CPU profile (benchtest.ProfileWindow).
func dispatcherTrial(b *testing.B, cfg dispatcher.Config, name string) trial {
	e, _ := benchEnv(b)
	defer e.conn.Close()
	r := e.start(e.conn, cfg)
	defer r.stop(b)
	// Time from the moment every partition's worker runs: setting up
	// (consumers, subscriptions, the first heartbeat) is not consuming.
	for metricValue(b, r.reg, "pushproxy_dispatcher_partition_takeovers_total") < benchPartitions {
		time.Sleep(time.Millisecond)
	}
	stopProfile := benchtest.ProfileWindow(b, name)
	start := time.Now()
	c0 := benchtest.CPUTime()
	for metricValue(b, r.reg, "pushproxy_dispatcher_events_acked_total") < benchEvents {
		time.Sleep(5 * time.Millisecond)
	}
	took, cpu := time.Since(start), benchtest.CPUTime()-c0
	stopProfile()
	waitFor(b, "every event acknowledged", func() bool { return settled(b, e) })
	return trial{took: took, cpu: cpu, pushes: int(metricValue(b, r.reg, "pushproxy_dispatcher_pushes_total", "result", "sent"))}
}

// rawTrial consumes a fresh benchEnv with one plain durable pull consumer
// per partition, acking each event, and measures the time from consuming
// to the last ack sent; name names the window's CPU profile.
func rawTrial(b *testing.B, name string) trial {
	e, _ := benchEnv(b)
	defer e.conn.Close()
	var acked atomic.Int64
	var cons []jetstream.Consumer
	for p := range benchPartitions {
		c, err := e.conn.JS.CreateOrUpdateConsumer(context.Background(), broker.StreamMail, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("raw-p%d", p), FilterSubject: broker.PartitionFilter(p),
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: dispatcher.DefaultMaxAckPending,
		})
		if err != nil {
			b.Fatal(err)
		}
		cons = append(cons, c)
	}
	stopProfile := benchtest.ProfileWindow(b, name)
	start := time.Now()
	for _, c := range cons {
		cc, err := c.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			acked.Add(1)
		}, jetstream.PullMaxMessages(dispatcher.DefaultFetchBatch))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Stop()
	}
	c0 := benchtest.CPUTime()
	for acked.Load() < benchEvents {
		time.Sleep(5 * time.Millisecond)
	}
	took, cpu := time.Since(start), benchtest.CPUTime()-c0
	stopProfile()
	waitFor(b, "every event acknowledged", func() bool {
		for _, c := range cons {
			info, err := c.Info(context.Background())
			if err != nil || info.NumAckPending > 0 || info.NumPending > 0 {
				return false
			}
		}
		return true
	})
	return trial{took: took, cpu: cpu}
}

// BenchmarkDispatcher measures events per second through the whole
// dispatcher (decode, state, coalescing, relay request, sent record, state
// write, ack) to a local relay that answers at once, and pushes per event,
// on bursts of new mail (benchEvents/benchUsers events per user).
func BenchmarkDispatcher(b *testing.B) {
	b.StopTimer()
	var rounds benchtest.Rounds
	pushes := 0
	for i := range b.N {
		t := dispatcherTrial(b, benchConfig(), fmt.Sprintf("dispatcher-%d", i))
		rounds.Add(t.took, t.cpu)
		pushes += t.pushes
	}
	rounds.Report(b, "", "event", benchEvents)
	b.ReportMetric(float64(pushes)/float64(b.N*benchEvents), "pushes/event")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRawConsumeAck is the baseline: the same events on the same kind
// of server consumed by one durable pull consumer per partition with
// explicit acks, nothing else.
func BenchmarkRawConsumeAck(b *testing.B) {
	b.StopTimer()
	var rounds benchtest.Rounds
	for i := range b.N {
		t := rawTrial(b, fmt.Sprintf("raw-%d", i))
		rounds.Add(t.took, t.cpu)
	}
	rounds.Report(b, "", "event", benchEvents)
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDispatcherVsRaw alternates the dispatcher, raw consuming and
// the dispatcher decoding with encoding/json only (LibraryDecode), so
// that all see the same machine load. It reports the dispatcher's rate as
// a share of raw, and what the hand-written decoder of decode.go gains
// over the library path, end to end, in rate and in CPU per event (it is
// kept only while that is at least 10%); each kind's figures are those of
// its median round (benchtest.Rounds).
func BenchmarkDispatcherVsRaw(b *testing.B) {
	b.StopTimer()
	library := benchConfig()
	library.LibraryDecode = true
	var disp, raw, lib benchtest.Rounds
	pushes := 0
	for i := range b.N {
		d := dispatcherTrial(b, benchConfig(), fmt.Sprintf("dispatcher-%d", i))
		disp.Add(d.took, d.cpu)
		pushes += d.pushes
		r := rawTrial(b, fmt.Sprintf("raw-%d", i))
		raw.Add(r.took, r.cpu)
		l := dispatcherTrial(b, library, fmt.Sprintf("library-%d", i))
		lib.Add(l.took, l.cpu)
	}
	disp.Report(b, "dispatcher-", "event", benchEvents)
	raw.Report(b, "raw-", "event", benchEvents)
	lib.Report(b, "library-", "event", benchEvents)
	b.ReportMetric(100*raw.Took().Seconds()/disp.Took().Seconds(), "%-of-raw")
	b.ReportMetric(100*(lib.Took().Seconds()/disp.Took().Seconds()-1), "fastpath-rate-gain-%")
	if disp.CPU() > 0 {
		b.ReportMetric(100*(lib.CPU().Seconds()/disp.CPU().Seconds()-1), "fastpath-cpu-gain-%")
	}
	b.ReportMetric(float64(pushes)/float64(b.N*benchEvents), "pushes/event")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkEventToPushLatency publishes new mail at a fixed rate and
// reports the p50 and p99 time from publishing an event to the relay
// receiving a count that covers it, with the default coalescing window and
// with a short one.
func BenchmarkEventToPushLatency(b *testing.B) {
	for _, window := range []time.Duration{coalesce.DefaultWindow, 20 * time.Millisecond} {
		b.Run(fmt.Sprintf("window=%s", window), func(b *testing.B) {
			const rate, seconds, users = 2000, 2, 500
			var all []time.Duration
			for range b.N {
				b.StopTimer()
				e := newEnv(b, brokertest.WithPartitions(benchPartitions))
				e.enableProxy()
				var names []string
				for i := range users {
					names = append(names, userName(i))
				}
				e.subscribe(names...)
				type arrival struct {
					count int
					at    time.Time
				}
				var mu sync.Mutex
				arrivals := map[string][]arrival{}
				e.relay.setAnswer(func(int) answer {
					return answer{status: http.StatusOK, device: func(n relayproto.Notification, r relayproto.Recipient) relayproto.DeviceResult {
						mu.Lock()
						arrivals[r.DeviceID] = append(arrivals[r.DeviceID], arrival{n.Payload.UnseenEmailCount, time.Now()})
						mu.Unlock()
						return relayproto.DeviceResult{AppID: r.AppID, DeviceID: r.DeviceID, Status: relayproto.DeviceDelivered}
					}}
				})
				cfg := benchConfig()
				cfg.Coalesce = coalesce.Config{Window: window}
				r := e.start(e.conn, cfg)
				time.Sleep(500 * time.Millisecond) // partitions assigned
				b.StartTimer()
				type sent struct {
					user  string
					count int
					at    time.Time
				}
				var published []sent
				next := make([]int, users)
				tick := time.NewTicker(10 * time.Millisecond)
				perTick := rate / 100
				for i := 0; i < rate*seconds; i += perTick {
					<-tick.C
					var evs []events.Event
					for k := range perTick {
						u := (i + k) % users
						next[u]++
						evs = append(evs, newEvent(names[u], events.KindNew, 1, events.IntPtr(next[u])))
						published = append(published, sent{names[u], next[u], time.Now()})
					}
					e.publish(evs...)
				}
				tick.Stop()
				waitFor(b, "every event settled", func() bool { return settled(b, e) })
				b.StopTimer()
				mu.Lock()
				for _, p := range published {
					for _, a := range arrivals[deviceOf(p.user)] {
						if a.count >= p.count {
							all = append(all, a.at.Sub(p.at))
							break
						}
					}
				}
				mu.Unlock()
				r.stop(b)
			}
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			if len(all) == 0 {
				b.Fatal("no latencies measured")
			}
			b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
