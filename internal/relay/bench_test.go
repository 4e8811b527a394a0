package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/benchtest"
	"github.com/pushproxy/pushproxy/internal/benchtest/forward"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// The relay benchmark's workload: what dispatchers send, requests of
// benchBatch notifications (the dispatcher's default batch) with one APNs
// device each, benchSenders requests in flight at once (the dispatcher's
// default), benchRound notifications per round.
const (
	benchBatch   = 100
	benchSenders = 4
	benchRound   = 20_000
	benchApp     = "com.fabrikam.mail"
	// benchGoal is the share of the anchor's rate the relay should reach.
	benchGoal = 80
)

// BenchmarkRelayVsForward measures the relay alone against a fair anchor
// in the same run, alternating rounds of both so that both see the same
// machine load. Both are served over HTTPS with HTTP/2 and get the same
// requests from the dispatcher's relay client (internal/relayclient, an S2S
// token on each request); both send every device's badge to the same local
// APNs push service over HTTP/2, with clients of the same settings (the
// relay's as Config.ProviderHTTPClient) and the same bound on sends in
// flight (an organization+app's share of a lane).
// The relay verifies the token, charges the organization's quota (set so
// high that it never refuses), routes to the APNs app bound to the
// organization and sends through its lane and bulkhead; the anchor, a bare
// handler, decodes the request, forwards and answers "delivered".
//
// It reports notifications/s of both, the relay's as a share of the
// anchor's (%-of-anchor; the goal, printed, is at least 80%), and the CPU
// time of the whole process (client, server, push service and NATS) per
// notification of each, each from its median round (benchtest.Rounds).
func BenchmarkRelayVsForward(b *testing.B) {
	b.StopTimer()
	push := newAPNsService(b, 0)
	r := startRelay(b, Config{TenantRate: 1e9, ProviderHTTPClient: providerClient(push.srv)}, true)
	fabrikam := newPartnerKey(b, "fabrikam.com")
	r.registerPartner(b, fabrikam)
	r.addAPNsApp(b, fabrikam.token(b, realmOf(fabrikam)), fabrikam.org, benchApp, push.srv.URL, delivered)
	anchor := forward.Start(forward.Config{Push: push.srv.URL, Client: providerClient(push.srv),
		Slots: Limit{Concurrency: DefaultProviderConcurrent}.share(0), Path: DefaultBasePath + relayproto.PublishPath})
	defer anchor.Close()

	issuer := fabrikam.issuer(b, realmOf(fabrikam))
	relayClient := frontClient(r.client.Transport.(*http.Transport).TLSClientConfig.RootCAs)
	anchorClient := frontClient(anchor.Roots())
	requireHTTP2(b, relayClient, r.base+"/healthz")
	requireHTTP2(b, anchorClient, anchor.URL()+"/")
	relay := newBenchSender(issuer, relayClient, r.base+DefaultBasePath)
	forward := newBenchSender(issuer, anchorClient, anchor.URL()+DefaultBasePath)
	batches := benchBatches()
	relay.round(b, batches) // warm-up: connections, provider token
	forward.round(b, batches)

	var relayed, forwarded benchtest.Rounds
	for range b.N {
		relayed.Add(relay.round(b, batches))
		forwarded.Add(forward.round(b, batches))
	}
	relayed.Report(b, "relay-", "notification", benchRound)
	forwarded.Report(b, "anchor-", "notification", benchRound)
	share := 100 * forwarded.Took().Seconds() / relayed.Took().Seconds()
	b.ReportMetric(share, "%-of-anchor")
	b.ReportMetric(0, "ns/op")
	b.Logf("goal: the relay at %d%% or more of the anchor; measured %.0f%% (median rounds: relay %.0f, anchor %.0f notifications/s)",
		benchGoal, share, float64(benchRound)/relayed.Took().Seconds(), float64(benchRound)/forwarded.Took().Seconds())
}

// benchBatches is one round of requests: benchRound notifications, one
// APNs device each, benchBatch per request.
func benchBatches() [][]relayproto.Notification {
	var batches [][]relayproto.Notification
	for i := 0; i < benchRound; i += benchBatch {
		batch := make([]relayproto.Notification, 0, benchBatch)
		for j := i; j < i+benchBatch; j++ {
			batch = append(batch, notification("bench-"+strconv.Itoa(j), j%100, benchApp, fmt.Sprintf("%064x", j+1)))
		}
		batches = append(batches, batch)
	}
	return batches
}

// benchSender publishes rounds to one endpoint with the dispatcher's relay
// client.
type benchSender struct {
	client *relayclient.Client
	uri    string
}

// newBenchSender is the dispatcher's relay client over hc, with tokens
// from issuer, publishing to uri.
func newBenchSender(issuer *tokens.Issuer, hc *http.Client, uri string) *benchSender {
	return &benchSender{client: relayclient.New(relayclient.Config{Tokens: issuer, HTTPClient: hc, Timeout: time.Minute, BreakerFailures: -1}), uri: uri}
}

// round publishes batches from benchSenders goroutines and returns the
// time and CPU time from the first request to the last answer. Every
// device must be answered delivered.
func (s *benchSender) round(b *testing.B, batches [][]relayproto.Notification) (took, cpu time.Duration) {
	work := make(chan []relayproto.Notification, len(batches))
	for _, batch := range batches {
		work <- batch
	}
	close(work)
	var wg sync.WaitGroup
	start, c0 := time.Now(), benchtest.CPUTime()
	for range benchSenders {
		wg.Go(func() {
			for batch := range work {
				resp, err := s.client.Publish(context.Background(), s.uri, batch)
				if err != nil {
					b.Errorf("publishing to %s: %v", s.uri, err)
					return
				}
				if got := countDelivered(resp); got != len(batch) {
					b.Errorf("%s delivered %d of %d devices: %+v", s.uri, got, len(batch), resp.Results[0].Devices[0])
					return
				}
			}
		})
	}
	wg.Wait()
	took, cpu = time.Since(start), benchtest.CPUTime()-c0
	if b.Failed() {
		b.FailNow()
	}
	return took, cpu
}

// countDelivered counts the devices resp answers delivered.
func countDelivered(resp relayproto.Response) int {
	n := 0
	for _, res := range resp.Results {
		for _, d := range res.Devices {
			if d.Status == relayproto.DeviceDelivered {
				n++
			}
		}
	}
	return n
}

// requireHTTP2 fails b unless client speaks HTTP/2 to url.
func requireHTTP2(b *testing.B, client *http.Client, url string) {
	b.Helper()
	resp, err := client.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		b.Fatalf("%s answered over %s, want HTTP/2", url, resp.Proto)
	}
}

// frontClient is the dispatcher's HTTP client towards a relay, as
// relayclient makes it by default, trusting roots.
func frontClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        100,
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// providerClient is an HTTP/2-only client to the push service srv, tuned
// like the providers' own (internal/httpx); the relay
// and the anchor each get one.
func providerClient(srv *httptest.Server) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	var h2 http.Protocols
	h2.SetHTTP2(true)
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
			ForceAttemptHTTP2:   true,
			Protocols:           &h2,
			MaxIdleConns:        100,
			MaxIdleConnsPerHost: 100,
			IdleConnTimeout:     90 * time.Second,
		},
	}
}
