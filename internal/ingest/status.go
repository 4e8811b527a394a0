package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources/imap"
)

// SubjectStatus is where every ingest answers a status request (no queue
// group: pushctl gathers the answers of all of them, see GatherStatus).
const SubjectStatus = "pushproxy.ingest.status"

// Status is what one ingest process tells about its sources.
type Status struct {
	// Instance names the process: host and pid.
	Instance string `json:"instance"`
	// Started is when it started serving.
	Started time.Time `json:"started"`
	// Sources are the events stored per source and tenant since it
	// started, with the last one's time.
	Sources []SourceActivity `json:"sources"`
	// IMAP is the IMAP watcher's users per tenant (when it runs).
	IMAP []imap.TenantStatus `json:"imap,omitempty"`
}

// SourceActivity is the events of one source and tenant that an ingest
// stored (duplicates not counted).
type SourceActivity struct {
	Source    events.Source `json:"source"`
	Tenant    string        `json:"tenant"`
	Events    uint64        `json:"events"`
	LastEvent time.Time     `json:"last_event"`
}

// activity remembers SourceActivity per source and tenant, for at most
// max tenants per source (later ones count under "other", as in
// pushproxy_ingest_tenant_events_total), and keeps the per-source gauge
// pushproxy_ingest_source_last_event_timestamp_seconds.
type activity struct {
	max  int
	last *prometheus.GaugeVec

	mu       sync.Mutex
	bySource map[events.Source]map[string]*SourceActivity
}

func newActivity(max int) *activity {
	return &activity{max: max, bySource: map[events.Source]map[string]*SourceActivity{},
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushproxy_ingest_source_last_event_timestamp_seconds",
			Help: "Unix time at which this ingest last stored an event of the source (per tenant: pushctl sources status).",
		}, []string{"source"})}
}

// stored records the events of evs that were not duplicates, at now.
func (a *activity) stored(source events.Source, evs []events.Event, acks []Ack, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tenants := a.bySource[source]
	if tenants == nil {
		tenants = map[string]*SourceActivity{}
		a.bySource[source] = tenants
	}
	n := 0
	for i := range evs {
		if acks[i].Duplicate {
			continue
		}
		tenant := evs[i].Tenant
		act, ok := tenants[tenant]
		if !ok {
			if len(tenants) >= a.max {
				tenant = "other"
			}
			if act, ok = tenants[tenant]; !ok {
				act = &SourceActivity{Source: source, Tenant: tenant}
				tenants[tenant] = act
			}
		}
		act.Events++
		act.LastEvent = now
		n++
	}
	if n > 0 {
		a.last.WithLabelValues(string(source)).Set(float64(now.UnixNano()) / 1e9)
	}
}

// snapshot returns the activity sorted by source and tenant.
func (a *activity) snapshot() []SourceActivity {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []SourceActivity{}
	for _, tenants := range a.bySource {
		for _, act := range tenants {
			out = append(out, *act)
		}
	}
	slices.SortFunc(out, func(x, y SourceActivity) int {
		if c := strings.Compare(string(x.Source), string(y.Source)); c != 0 {
			return c
		}
		return strings.Compare(x.Tenant, y.Tenant)
	})
	return out
}

// Status is the server's status now.
func (s *Server) Status() Status {
	st := Status{Instance: s.instance, Started: s.started, Sources: s.activity.snapshot()}
	for _, part := range s.statusParts {
		part(&st)
	}
	return st
}

// instanceName is host/pid, how a status names its process.
func instanceName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

// serveStatus answers status requests on nc until ctx ends.
func (s *Server) serveStatus(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(SubjectStatus, func(m *nats.Msg) {
		data, err := json.Marshal(s.Status())
		if err != nil {
			s.log.Error().Err(err).Msg("encoding the ingest status")
			return
		}
		if err := m.Respond(data); err != nil {
			s.log.Warn().Err(err).Msg("answering a status request")
		}
	})
	if err != nil {
		return fmt.Errorf("answering status requests on %s: %w", SubjectStatus, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return ctx.Err()
}

// GatherStatus asks every ingest for its status and returns the answers
// that come within wait (or until ctx ends), sorted by instance; none is
// not an error.
func GatherStatus(ctx context.Context, nc *nats.Conn, wait time.Duration) ([]Status, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("asking the ingests for their status: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(SubjectStatus, inbox, nil); err != nil {
		return nil, fmt.Errorf("asking the ingests for their status: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var out []Status
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break // the wait is over
		}
		var st Status
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return nil, fmt.Errorf("decoding an ingest's status: %w", err)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Instance, b.Instance) })
	return out, nil
}
