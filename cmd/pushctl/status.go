package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/probe"
	"github.com/pushproxy/pushproxy/internal/sourcestatus"
	"github.com/pushproxy/pushproxy/internal/storage"
)

func statusCommand() command {
	return command{name: "status", summary: "streams, consumers, dispatcher workers and the last probe", run: runStatus}
}

// streamStatus is one stream of the status report.
type streamStatus struct {
	Name      string    `json:"name"`
	Messages  uint64    `json:"messages"`
	Bytes     uint64    `json:"bytes"`
	Consumers int       `json:"consumers"`
	LastAt    time.Time `json:"last_at,omitzero"`
}

// consumerStatus is one durable consumer of the status report.
type consumerStatus struct {
	Stream      string    `json:"stream"`
	Name        string    `json:"name"`
	Filter      string    `json:"filter,omitempty"`
	Pending     uint64    `json:"pending"`
	AckPending  int       `json:"ack_pending"`
	Redelivered int       `json:"redelivered"`
	Waiting     int       `json:"waiting"`
	Pinned      string    `json:"pinned,omitempty"`
	PinnedSince time.Time `json:"pinned_since,omitzero"`
}

// workerStatus is one dispatcher heard on the membership subject.
type workerStatus struct {
	ID         string `json:"id"`
	Partitions []int  `json:"partitions"`
	// Reads are the encodings of stored values the dispatcher reads
	// (empty: a release that reads only JSON).
	Reads []storage.Encoding `json:"reads,omitempty"`
	// Deaf: the dispatcher hears nothing from NATS (not even its own
	// heartbeats) and pushes nothing; the others take its partitions.
	Deaf bool `json:"deaf,omitempty"`
}

// statusReport is everything pushctl status prints.
type statusReport struct {
	Streams   []streamStatus   `json:"streams"`
	Consumers []consumerStatus `json:"consumers"`
	Ephemeral int              `json:"ephemeral_consumers"`
	Workers   []workerStatus   `json:"workers"`
	Probe     *probe.Result    `json:"last_probe,omitempty"`
	Canary    *probe.Result    `json:"last_canary,omitempty"`
	// Ingests are the ingests that answered, each with its events per
	// source; Managers who runs each subscription manager.
	Ingests  []ingestStatus              `json:"ingests"`
	Managers []sourcestatus.ManagerLease `json:"managers"`
}

// ingestStatus is one ingest and what it stored per source since it
// started (pushctl sources status has it per tenant).
type ingestStatus struct {
	Instance string         `json:"instance"`
	Started  time.Time      `json:"started"`
	Sources  []sourceTotals `json:"sources"`
}

// sourceTotals is the events of one source that an ingest stored.
type sourceTotals struct {
	Source    string    `json:"source"`
	Tenants   int       `json:"tenants"`
	Events    uint64    `json:"events"`
	LastEvent time.Time `json:"last_event"`
}

// ingestTotals sums an ingest's status per source.
func ingestTotals(st ingest.Status) ingestStatus {
	out := ingestStatus{Instance: st.Instance, Started: st.Started, Sources: []sourceTotals{}}
	for _, a := range st.Sources {
		i := slices.IndexFunc(out.Sources, func(t sourceTotals) bool { return t.Source == string(a.Source) })
		if i < 0 {
			out.Sources = append(out.Sources, sourceTotals{Source: string(a.Source)})
			i = len(out.Sources) - 1
		}
		t := &out.Sources[i]
		t.Tenants++
		t.Events += a.Events
		if a.LastEvent.After(t.LastEvent) {
			t.LastEvent = a.LastEvent
		}
	}
	return out
}

func runStatus(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("status", "pushctl status [flags]", `
Prints the state of the deployment: every stream with its message count,
every durable consumer with its pending, unacknowledged and redelivered
messages and the client pinned to it (a dispatcher consumes each MAIL
partition through a pinned consumer), the dispatcher workers heard on their
membership subject with the partitions each consumes, the ingests that
answer with the events each stored per source and the last one's time, who
runs the Graph and EWS subscription managers, and the last results of the
connectivity probe and of the end-to-end canary. pushctl sources status
has the sources per tenant.`)
	listen := fs.Duration("listen", 2500*time.Millisecond, "how long to listen for dispatcher heartbeats (they come every second by default)")
	subject := fs.String("membership-subject", dispatcher.DefaultMembershipSubject, "the subject dispatchers announce themselves on")
	asJSON := fs.Bool("json", false, "print JSON")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	conn, err := connect(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()

	var (
		workers   []workerStatus
		workerErr error
		wg        sync.WaitGroup
	)
	var (
		ingests   []ingest.Status
		ingestErr error
	)
	wg.Go(func() { workers, workerErr = listenWorkers(ctx, conn.NC, *subject, *listen) })
	wg.Go(func() { ingests, ingestErr = ingest.GatherStatus(ctx, conn.NC, *listen) })
	rep := statusReport{Ingests: []ingestStatus{}}
	if err := collectStreams(ctx, conn.JS, &rep); err != nil {
		wg.Wait()
		return err
	}
	for _, p := range []struct {
		subject string
		into    **probe.Result
	}{{probe.SubjectConnectivity, &rep.Probe}, {probe.SubjectCanary, &rep.Canary}} {
		r, err := probe.Last(ctx, conn.JS, p.subject)
		switch {
		case err == nil:
			*p.into = &r
		case !errors.Is(err, probe.ErrNoResult):
			wg.Wait()
			return err
		}
	}
	managers, err := sourcestatus.Managers(ctx, conn.JS)
	if err != nil {
		wg.Wait()
		return err
	}
	rep.Managers = managers
	wg.Wait()
	if err := errors.Join(workerErr, ingestErr); err != nil {
		return err
	}
	rep.Workers = workers
	for _, st := range ingests {
		rep.Ingests = append(rep.Ingests, ingestTotals(st))
	}
	if *asJSON {
		return printJSON(c.stdout, rep)
	}
	return printStatus(c.stdout, rep)
}

// collectStreams lists the streams and their durable consumers.
func collectStreams(ctx context.Context, js jetstream.JetStream, rep *statusReport) error {
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		rep.Streams = append(rep.Streams, streamStatus{
			Name: info.Config.Name, Messages: info.State.Msgs, Bytes: info.State.Bytes,
			Consumers: info.State.Consumers, LastAt: info.State.LastTime,
		})
	}
	if err := streams.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return fmt.Errorf("listing streams: %w", err)
	}
	sort.Slice(rep.Streams, func(i, j int) bool { return rep.Streams[i].Name < rep.Streams[j].Name })
	for _, s := range rep.Streams {
		if s.Consumers == 0 {
			continue
		}
		stream, err := js.Stream(ctx, s.Name)
		if err != nil {
			return fmt.Errorf("opening stream %s: %w", s.Name, err)
		}
		consumers := stream.ListConsumers(ctx)
		for info := range consumers.Info() {
			if info.Config.Durable == "" {
				rep.Ephemeral++
				continue
			}
			cs := consumerStatus{
				Stream: s.Name, Name: info.Name, Filter: strings.Join(filters(info.Config), ","),
				Pending: info.NumPending, AckPending: info.NumAckPending, Redelivered: info.NumRedelivered, Waiting: info.NumWaiting,
			}
			for _, g := range info.PriorityGroups {
				if g.PinnedClientID != "" {
					cs.Pinned, cs.PinnedSince = g.PinnedClientID, g.PinnedTS
				}
			}
			rep.Consumers = append(rep.Consumers, cs)
		}
		if err := consumers.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
			return fmt.Errorf("listing consumers of %s: %w", s.Name, err)
		}
	}
	sort.Slice(rep.Consumers, func(i, j int) bool {
		a, b := rep.Consumers[i], rep.Consumers[j]
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return naturalLess(a.Name, b.Name)
	})
	return nil
}

func filters(cfg jetstream.ConsumerConfig) []string {
	if cfg.FilterSubject != "" {
		return []string{cfg.FilterSubject}
	}
	return cfg.FilterSubjects
}

// naturalLess orders names with numbers by value: p2 before p10.
func naturalLess(a, b string) bool {
	ta, na := splitNumber(a)
	tb, nb := splitNumber(b)
	if ta != tb || na < 0 || nb < 0 {
		return a < b
	}
	return na < nb
}

// splitNumber splits a trailing number off s; -1 when there is none.
func splitNumber(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(s[i:])
	if err != nil {
		return s, -1
	}
	return s[:i], n
}

// listenWorkers collects the dispatchers that announce themselves on
// subject within d.
func listenWorkers(ctx context.Context, nc *nats.Conn, subject string, d time.Duration) ([]workerStatus, error) {
	var mu sync.Mutex
	seen := map[string]workerStatus{}
	sub, err := nc.Subscribe(subject, func(msg *nats.Msg) {
		var a dispatcher.Announcement
		if json.Unmarshal(msg.Data, &a) != nil || a.ID == "" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if a.Leaving {
			delete(seen, a.ID)
			return
		}
		seen[a.ID] = workerStatus{ID: a.ID, Partitions: slices.Sorted(slices.Values(a.Owns)), Reads: a.Reads, Deaf: a.Deaf}
	})
	if err != nil {
		return nil, fmt.Errorf("listening for dispatchers on %s: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
	}
	mu.Lock()
	defer mu.Unlock()
	out := make([]workerStatus, 0, len(seen))
	for _, w := range seen {
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func printStatus(w io.Writer, rep statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tMESSAGES\tBYTES\tCONSUMERS\tLAST MESSAGE")
	for _, s := range rep.Streams {
		last := "-"
		if !s.LastAt.IsZero() {
			last = formatTime(s.LastAt)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", s.Name, s.Messages, s.Bytes, s.Consumers, last)
	}
	fmt.Fprintln(tw)
	if len(rep.Consumers) == 0 {
		fmt.Fprintln(tw, "No durable consumers: no dispatcher has started yet.")
	} else {
		fmt.Fprintln(tw, "STREAM\tCONSUMER\tFILTER\tPENDING\tACK PENDING\tREDELIVERED\tWAITING\tPINNED CLIENT")
		for _, c := range rep.Consumers {
			pinned := "-"
			if c.Pinned != "" {
				pinned = c.Pinned + " since " + formatTime(c.PinnedSince)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", c.Stream, c.Name, c.Filter, c.Pending, c.AckPending, c.Redelivered, c.Waiting, pinned)
		}
	}
	if rep.Ephemeral > 0 {
		fmt.Fprintf(tw, "(and %d ephemeral consumer(s): watchers, replays, listings)\n", rep.Ephemeral)
	}
	fmt.Fprintln(tw)
	if len(rep.Workers) == 0 {
		fmt.Fprintln(tw, "No dispatcher workers heard.")
	} else {
		fmt.Fprintln(tw, "DISPATCHER\tPARTITIONS")
		for _, wk := range rep.Workers {
			parts := make([]string, 0, len(wk.Partitions))
			for _, p := range wk.Partitions {
				parts = append(parts, strconv.Itoa(p))
			}
			note := ""
			if wk.Deaf {
				note = "  (deaf: hears nothing from NATS, pushes nothing; the others take its partitions)"
			}
			fmt.Fprintf(tw, "%s\t%s%s\n", wk.ID, strings.Join(parts, ","), note)
		}
	}
	fmt.Fprintln(tw)
	if len(rep.Ingests) == 0 {
		fmt.Fprintln(tw, "No ingest answered.")
	} else {
		fmt.Fprintln(tw, "INGEST\tSOURCE\tTENANTS\tEVENTS\tLAST EVENT")
		for _, in := range rep.Ingests {
			if len(in.Sources) == 0 {
				fmt.Fprintf(tw, "%s\t-\t0\t0\tnone since %s\n", in.Instance, formatTime(in.Started))
			}
			for _, src := range in.Sources {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", in.Instance, src.Source, src.Tenants, src.Events, formatTime(src.LastEvent))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range rep.Managers {
		if l.Holder != "" {
			fmt.Fprintf(w, "The %s manager runs in %s since %s.\n", l.Lease, l.Holder, formatTime(l.Since))
		}
	}
	fmt.Fprintln(w)
	printLastResult(w, "Last connectivity probe", rep.Probe, "none yet (pushctl probe runs one)")
	printLastResult(w, "Last end-to-end canary", rep.Canary, "none yet (the monitor runs it when it has an ingest URL)")
	return nil
}

func printLastResult(w io.Writer, what string, r *probe.Result, none string) {
	if r == nil {
		fmt.Fprintf(w, "%s: %s\n", what, none)
		return
	}
	fmt.Fprintf(w, "%s: %s at %s", what, r.ResultType, formatTime(r.At))
	if r.Succeeded() {
		fmt.Fprintf(w, " (latency %s)\n", r.Latency.Round(time.Millisecond))
		return
	}
	fmt.Fprintf(w, " (%s): %s\n", r.Class, r.Error)
}
