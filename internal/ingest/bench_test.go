package ingest_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
)

// The benchmarks report events/s. BenchmarkRawPublishAsyncDedup is the
// baseline the ingest benchmarks compare with: the same embedded server,
// JetStream async publish with a Nats-Msg-Id per event, from this process.

const benchUsers = 1000

func BenchmarkRawPublishAsyncDedup(b *testing.B) {
	conn := brokertest.Start(b)
	keyer := brokertest.Keyer(b, conn)
	js, err := jetstream.New(conn.NC, jetstream.WithPublishAsyncMaxPending(ingest.DefaultMaxPending))
	if err != nil {
		b.Fatal(err)
	}
	subjects := make([]string, benchUsers)
	for u := range subjects {
		subjects[u] = keyer.Subject("fabrikam.com", fmt.Sprintf("user%d@fabrikam.com", u))
	}
	e := events.Event{Version: 1, Tenant: "fabrikam.com", User: "user0@fabrikam.com", Mailbox: "INBOX", Kind: events.KindNew, Count: 1, ChangeID: "raw", Source: events.SourceNative}
	data, err := e.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		msg := &nats.Msg{Subject: subjects[i%benchUsers], Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{"raw-" + strconv.Itoa(i)}}}
		if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkIngestSingle(b *testing.B) { benchmarkIngest(b, 1) }

func BenchmarkIngestBatch(b *testing.B) { benchmarkIngest(b, 100) }

// benchmarkIngest posts NDJSON requests of perRequest new-mail events to
// ingest over loopback HTTP from concurrent clients; b.N counts requests.
// The request bodies are made before the clock starts.
func benchmarkIngest(b *testing.B, perRequest int) {
	h := newHarness(b)
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
