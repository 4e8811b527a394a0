package ingest_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/benchtest"
	"github.com/pushproxy/pushproxy/internal/benchtest/bareingest"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
)

// The benchmarks report events/s. BenchmarkRawPublishAsyncDedup is the
// baseline the ingest benchmarks compare with: the same embedded server,
// JetStream async publish from this process of the very messages ingest
// stores for the same requests (storedMessages), each with its
// Nats-Msg-Id.

const benchUsers = 1000

func BenchmarkRawPublishAsyncDedup(b *testing.B) {
	conn := brokertest.Start(b)
	js, err := jetstream.New(conn.NC, jetstream.WithPublishAsyncMaxPending(ingest.DefaultMaxPending))
	if err != nil {
		b.Fatal(err)
	}
	msgs := storedMessages(b, brokertest.Keyer(b, conn), "raw", b.N)
	b.ResetTimer()
	for i := range msgs {
		if _, err := js.PublishMsgAsync(msgs[i], jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// storedMessages makes the n messages ingest stores for the bench's
// requests (timeIngestRound, benchmarkIngest): each event encoded as
// ingest completes it, with both timestamps (the test server's clock,
// now), on its user's subject, with its deduplication id. Raw publishing of the same bytes is the anchor
// that measures only what ingest adds.
func storedMessages(b testing.TB, keyer *events.Keyer, prefix string, n int) []*nats.Msg {
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		// {"user":...,"kind":"new","unread":1,"change_id":...} as ingest
		// completes it.
		e := events.Event{Version: events.SchemaVersion, Tenant: "fabrikam.com", User: fmt.Sprintf("user%d@fabrikam.com", i%benchUsers),
			Kind: events.KindNew, Unread: events.IntPtr(1), ChangeID: fmt.Sprintf("%s-%d", prefix, i),
			Source: events.SourceNative, OccurredAt: now, ReceivedAt: now}
		e.Normalize()
		data, err := e.Encode()
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = &nats.Msg{Subject: keyer.Subject(e.Tenant, e.User), Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{keyer.MsgID(&e)}}}
	}
	return msgs
}

func BenchmarkIngestSingle(b *testing.B) { benchmarkIngest(b, 1) }

func BenchmarkIngestBatch(b *testing.B) { benchmarkIngest(b, 100) }

// benchmarkIngest posts NDJSON requests of perRequest new-mail events to
// ingest over loopback HTTP from concurrent clients; b.N counts requests.
// The request bodies are made before the clock starts.
func benchmarkIngest(b *testing.B, perRequest int) {
	h := newHarness(b, unlimited)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	bodies := make([][]byte, b.N)
	for i := range bodies {
		var body bytes.Buffer
		for j := range perRequest {
			n := i*perRequest + j
			fmt.Fprintf(&body, `{"user":"user%d@fabrikam.com","kind":"new","unread":1,"change_id":"bench-%d"}`+"\n", n%benchUsers, n)
		}
		bodies[i] = body.Bytes()
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/events", bytes.NewReader(bodies[next.Add(1)-1]))
			req.Header.Set("Content-Type", "application/x-ndjson")
			req.Header.Set("Authorization", "Bearer "+nativeToken)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*perRequest)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkIngestVsRaw alternates rounds of raw async publishing, of
// ingest requests (batches of 100, and single events) and of the same
// requests to the bare handler (internal/benchtest/bareingest) on one
// server, so that all see the same machine load, and reports ingest's
// rates as a share of their anchors:
//   - batches against raw async publishing of the same messages with
//     Nats-Msg-Id, no HTTP at all (the goal: 90%), and against the
//     bare handler, which publishes a batch's events asynchronously and
//     awaits them together (what ingest adds to HTTP and publishing);
//   - single events against the bare handler's one synchronous publish per
//     request, same client and concurrency (goal 90%).
//
// Each kind's CPU per event is the whole process's (the server, the
// clients and the handlers share the machine) during its rounds.
//
// Each iteration is one round of every kind, in an order that turns by
// one kind each round; each kind's figures are those of its median round
// (benchtest.Rounds).
func BenchmarkIngestVsRaw(b *testing.B) {
	const roundEvents = 20_000
	h := newHarness(b, unlimited)
	js, err := jetstream.New(h.conn.NC, jetstream.WithPublishAsyncMaxPending(ingest.DefaultMaxPending))
	if err != nil {
		b.Fatal(err)
	}
	keyer := brokertest.Keyer(b, h.conn)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	bare := httptest.NewServer(&bareingest.Handler{JS: js, Subject: func(user string) string { return keyer.Subject("fabrikam.com", user) }})
	defer bare.Close()
	var raw, batch, bareBatch, single, bareSingle benchtest.Rounds
	b.ResetTimer()
	// Each kind's round, in an order that turns by one each round: a
	// round pays for some of the work its predecessor left behind (the
	// raw round's acknowledgements and garbage, above all), so no kind
	// always follows the same one.
	kinds := []func(round int){
		func(round int) { raw.Add(timeRawRound(b, js, keyer, round, roundEvents)) },
		func(round int) {
			batch.Add(timeIngestRound(b, client, h.url, fmt.Sprintf("b%d", round), roundEvents, 100))
		},
		func(round int) {
			bareBatch.Add(timeIngestRound(b, client, bare.URL, fmt.Sprintf("c%d", round), roundEvents, 100))
		},
		func(round int) {
			took, cpu := timeIngestRound(b, client, h.url, fmt.Sprintf("s%d", round), roundEvents/10, 1)
			single.Add(took*10, cpu*10)
		},
		func(round int) {
			took, cpu := timeIngestRound(b, client, bare.URL, fmt.Sprintf("a%d", round), roundEvents/10, 1)
			bareSingle.Add(took*10, cpu*10)
		},
	}
	for round := range b.N {
		for i := range kinds {
			kinds[(round+i)%len(kinds)](round)
		}
	}
	raw.Report(b, "raw-", "event", roundEvents)
	batch.Report(b, "batch-", "event", roundEvents)
	bareBatch.Report(b, "bare-batch-", "event", roundEvents)
	single.Report(b, "single-", "event", roundEvents)
	bareSingle.Report(b, "bare-single-", "event", roundEvents)
	b.ReportMetric(100*raw.Took().Seconds()/batch.Took().Seconds(), "batch-%-of-raw")
	b.ReportMetric(100*bareBatch.Took().Seconds()/batch.Took().Seconds(), "batch-%-of-bare")
	b.ReportMetric(100*raw.Took().Seconds()/single.Took().Seconds(), "single-%-of-raw")
	b.ReportMetric(100*bareSingle.Took().Seconds()/single.Took().Seconds(), "single-%-of-bare")
	b.ReportMetric(0, "ns/op")
}

// timeRawRound publishes n events asynchronously and returns the wall
// and CPU time (of the whole process: server, clients and handlers share
// the machine) from the first publish to the last acknowledgement.
func timeRawRound(b *testing.B, js jetstream.JetStream, keyer *events.Keyer, round, n int) (took, cpu time.Duration) {
	msgs := storedMessages(b, keyer, fmt.Sprintf("raw%d", round), n)
	start, c0 := time.Now(), benchtest.CPUTime()
	for _, msg := range msgs {
		if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	return time.Since(start), benchtest.CPUTime() - c0
}

// timeIngestRound posts n events in requests of perRequest from 8
// clients and returns the wall and CPU time (of the whole process) from
// the first request to the last answer; the bodies are made before.
func timeIngestRound(b *testing.B, client *http.Client, url, prefix string, n, perRequest int) (took, cpu time.Duration) {
	bodies := make(chan []byte, n/perRequest)
	for i := 0; i < n; i += perRequest {
		var body bytes.Buffer
		for j := range perRequest {
			fmt.Fprintf(&body, `{"user":"user%d@fabrikam.com","kind":"new","unread":1,"change_id":"%s-%d"}`+"\n", (i+j)%benchUsers, prefix, i+j)
		}
		bodies <- body.Bytes()
	}
	close(bodies)
	start, c0 := time.Now(), benchtest.CPUTime()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for body := range bodies {
				req, _ := http.NewRequest(http.MethodPost, url+"/v1/events", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/x-ndjson")
				req.Header.Set("Authorization", "Bearer "+nativeToken)
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), benchtest.CPUTime() - c0
}

// unlimited turns the per-credential rate limit off: the benchmarks
// measure ingest, not the limit.
func unlimited(c *ingest.Config) { c.CredentialRate = 0 }
