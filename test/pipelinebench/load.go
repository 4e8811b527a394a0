package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The events: event k of the run is user k%users's (k/users+1)-th, and
// sets that user's unread count to k/users+1, so that every event raises
// its user's badge by one. Users take turns, so at R events/s each user
// gets one every users/R seconds.

// eventUser is the user of event k.
func eventUser(k, users int) int { return k % users }

// eventCount is the unread count event k sets.
func eventCount(k, users int) int64 { return int64(k/users) + 1 }

// generator offers events to ingest at a fixed rate, open loop: a pacer
// hands each request when it is due to one of concurrency senders, and a
// request whose sender is still busy with earlier ones is not sent
// (counted as unsent), so that a slow pipeline shows as a lower achieved
// rate rather than as a slower pacer. A request goes to the sender of its
// first user (by group of batch users), so one user's events are sent one
// after the other, as a mail server reports one mailbox's changes, and
// reach the stream in the order of their counts.
type generator struct {
	url         string
	users       int
	concurrency int
	clock       *clock
	client      *http.Client
	// next is the index of the next event of the run.
	next int
	// stored counts the events ingest stored in the whole run, for
	// progress while a load runs.
	stored atomic.Int64
}

func newGenerator(ingestURL string, users, concurrency int, c *clock) *generator {
	return &generator{
		url: ingestURL + "/v1/events", users: users, concurrency: concurrency, clock: c,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency, DisableCompression: true,
		}},
	}
}

// retarget sends the next loads to the events API at ingestURL instead;
// the events go on where they were, so that every user's count keeps
// rising.
func (g *generator) retarget(ingestURL string) { g.url = ingestURL + "/v1/events" }

// load is what one stretch of offered load did.
type load struct {
	rate, batch int
	// first is the index of the stretch's first event; sentAt[i] is when
	// event first+i was sent (clock time), ok[i] whether ingest stored it.
	first  int
	sentAt []int64
	ok     []bool
	// start and end (clock times) bound the sending: from the first
	// request to the last answer.
	start, end int64
	stored     int
	unsent     int
	failed     int
	failure    string
}

// offered is how many events the stretch offered.
func (l *load) offered() int { return len(l.sentAt) }

// achieved is the events stored per second of sending.
func (l *load) achieved() float64 {
	return float64(l.stored) / (float64(l.end-l.start) / float64(time.Second))
}

// run offers rate events/s in requests of batch events for d, and returns
// what happened once every request sent is answered.
func (g *generator) run(ctx context.Context, rate, batch int, d time.Duration) *load {
	reqRate := float64(rate) / float64(batch)
	requests := max(1, int(reqRate*d.Seconds()))
	l := &load{rate: rate, batch: batch, first: g.next, sentAt: make([]int64, requests*batch), ok: make([]bool, requests*batch)}
	g.next += requests * batch
	queues := make([]chan int, g.concurrency)
	var stored, failed atomic.Int64
	var failureOnce sync.Once
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan int, senderQueue)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body bytes.Buffer
			for j := range queues[i] {
				n, why := g.send(ctx, l, j, &body)
				stored.Add(int64(n))
				g.stored.Add(int64(n))
				if why != "" {
					failed.Add(int64(batch - n))
					failureOnce.Do(func() { l.failure = why })
				}
			}
		}()
	}
	l.start = g.clock.now()
	tick := time.NewTicker(time.Millisecond)
	issued := 0
	for issued < requests && ctx.Err() == nil {
		due := min(requests, int(float64(g.clock.now()-l.start)/float64(time.Second)*reqRate)+1)
		for ; issued < due; issued++ {
			select {
			case queues[g.sender(l, issued)] <- issued:
			default:
				l.unsent += batch
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	tick.Stop()
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	l.end = g.clock.now()
	l.stored, l.failed = int(stored.Load()), int(failed.Load())
	return l
}

// senderQueue is how many requests may wait for one sender.
const senderQueue = 4

// sender is the sender of request j of l: that of its first user's group
// of l.batch users, so that the requests of a user all go to one sender.
func (g *generator) sender(l *load, j int) int {
	return eventUser(l.first+j*l.batch, g.users) / l.batch % g.concurrency
}

// send posts request j of l (one event as JSON, or NDJSON lines) and
// returns how many events ingest stored, and why not all were.
func (g *generator) send(ctx context.Context, l *load, j int, body *bytes.Buffer) (int, string) {
	body.Reset()
	lo := j * l.batch
	for i := lo; i < lo+l.batch; i++ {
		k := l.first + i
		body.WriteString(`{"user":"u`)
		body.WriteString(strconv.Itoa(eventUser(k, g.users)))
		body.WriteString(`@` + benchOrg + `","kind":"new","unread":`)
		body.WriteString(strconv.FormatInt(eventCount(k, g.users), 10))
		body.WriteString(`,"change_id":"e`)
		body.WriteString(strconv.Itoa(k))
		body.WriteString("\"}\n")
	}
	contentType := "application/json"
	if l.batch > 1 {
		contentType = "application/x-ndjson"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url, bytes.NewReader(body.Bytes()))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+standaloneToken)
	req.Header.Set("Content-Type", contentType)
	at := g.clock.now()
	for i := lo; i < lo+l.batch; i++ {
		l.sentAt[i] = at
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Sprintf("status %d: %.200s", resp.StatusCode, answer)
	}
	for i := lo; i < lo+l.batch; i++ {
		l.ok[i] = true
	}
	return l.batch, ""
}

// targets returns, per user, the highest count of l's stored events (0:
// none), which the provider must have received for l to be delivered.
func (l *load) targets(users int) []int64 {
	want := make([]int64, users)
	for i, ok := range l.ok {
		if ok {
			k := l.first + i
			u := eventUser(k, users)
			want[u] = max(want[u], eventCount(k, users))
		}
	}
	return want
}

// latencies returns the sorted event-to-push latencies of l's stored
// events (from sending the event to the provider receiving a badge at
// least as high), and how many stored events no badge covers yet.
func (l *load) latencies(p *provider, users int) ([]time.Duration, int) {
	out := make([]time.Duration, 0, l.stored)
	missing := 0
	p.locked(func() {
		for i, ok := range l.ok {
			if !ok {
				continue
			}
			k := l.first + i
			at, found := p.firstCovering(eventUser(k, users), eventCount(k, users))
			if !found {
				missing++
				continue
			}
			out = append(out, time.Duration(max(0, at-l.sentAt[i])))
		}
	})
	slices.Sort(out)
	return out, missing
}
