package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
)

// Leases of the subscription managers: every ingest started with a
// manager's flags runs it under the lease, so one at a time keeps the
// subscriptions, and another takes over within the lease TTL when the
// holder stops. What reaches an ingest that stands by about the managed
// subscriptions (an EWS notification to look up, a Graph lifecycle
// notification) is handed to the holder over NATS, so the notification
// URLs may point at any ingest behind a load balancer.
const (
	LeaseGraphSubscriptions = "graph-subscriptions"
	LeaseEWSSubscriptions   = "ews-subscriptions"
)

// Subjects on which the ingest holding a manager's lease answers the
// others.
const (
	subjectEWSLookup        = "pushproxy.ingest.ews.lookup"
	subjectEWSObserve       = "pushproxy.ingest.ews.observe"
	subjectEWSError         = "pushproxy.ingest.ews.error"
	subjectGraphLifecycle   = "pushproxy.ingest.graph.lifecycle"
	subjectGraphOnLifecycle = "pushproxy.ingest.graph.lifecycle-seen"
)

// forwardTimeout bounds a question to the lease holder; without an answer
// the notification is answered "retry later".
const forwardTimeout = 5 * time.Second

// managed is what an ingest shares between a manager it may run and the
// source that reads its subscriptions: whether it holds the lease now,
// and the NATS connection to reach the holder when it does not.
type managed struct {
	nc   *nats.Conn
	log  zerolog.Logger
	held atomic.Bool
}

// task returns the leased task: run, with held set and handlers answering
// the other ingests while it runs. held is set only once they answer.
func (m *managed) task(handlers map[string]nats.MsgHandler, run func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		var subs []*nats.Subscription
		defer func() {
			m.held.Store(false)
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
		}()
		for subject, h := range handlers {
			s, err := m.nc.Subscribe(subject, h)
			if err != nil {
				return fmt.Errorf("answering the other ingests on %s: %w", subject, err)
			}
			subs = append(subs, s)
		}
		m.held.Store(true)
		return run(ctx)
	}
}

// publish sends v to the holder, logging what fails (the manager learns
// the same later: the next status notification, the next renewal).
func (m *managed) publish(subject string, v any) {
	data, err := json.Marshal(v)
	if err == nil {
		err = m.nc.Publish(subject, data)
	}
	if err != nil {
		m.log.Warn().Err(err).Str("subject", subject).Msg("could not hand a notification to the ingest that runs the manager")
	}
}

// respond answers msg with v as JSON.
func (m *managed) respond(msg *nats.Msg, v any) {
	data, err := json.Marshal(v)
	if err == nil {
		err = msg.Respond(data)
	}
	if err != nil {
		m.log.Warn().Err(err).Msg("could not answer another ingest")
	}
}

// ewsManager is what the EWS source needs of *ews.Manager.
type ewsManager interface {
	Lookup(ctx context.Context, subscriptionID string) (ews.Subscription, error)
	Observe(ctx context.Context, subscriptionID, watermark string, at time.Time)
	OnSubscriptionError(ctx context.Context, se ews.SubscriptionError)
	Run(ctx context.Context) error
}

// ewsManaged is the EWS source's view of the manager: the local one while
// this ingest holds the lease, the holder's over NATS otherwise.
type ewsManaged struct {
	managed
	m ewsManager
}

// ewsLookupAnswer is the holder's answer to a lookup.
type ewsLookupAnswer struct {
	Subscription *ews.Subscription `json:"subscription,omitempty"`
	Unknown      bool              `json:"unknown,omitempty"`
	Error        string            `json:"error,omitempty"`
}

// ewsObserved is a notification the source stored, for the holder.
type ewsObserved struct {
	SubscriptionID string    `json:"subscription_id"`
	Watermark      string    `json:"watermark,omitempty"`
	At             time.Time `json:"at"`
}

// Lookup asks the manager; an ingest that stands by asks the holder, and
// without an answer the notification is retried later (ErrNotReady).
func (e *ewsManaged) Lookup(ctx context.Context, id string) (ews.Subscription, error) {
	if e.held.Load() {
		return e.m.Lookup(ctx, id)
	}
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	msg, err := e.nc.RequestWithContext(ctx, subjectEWSLookup, []byte(id))
	if err != nil {
		return ews.Subscription{}, fmt.Errorf("looking up EWS subscription %s with the ingest that runs the manager: %w: %w", id, ews.ErrNotReady, err)
	}
	var ans ewsLookupAnswer
	switch err := json.Unmarshal(msg.Data, &ans); {
	case err != nil:
		return ews.Subscription{}, fmt.Errorf("looking up EWS subscription %s: reading the answer: %w: %w", id, ews.ErrNotReady, err)
	case ans.Unknown:
		return ews.Subscription{}, fmt.Errorf("looking up EWS subscription %s: %w", id, ews.ErrUnknownSubscription)
	case ans.Error != "" || ans.Subscription == nil:
		return ews.Subscription{}, fmt.Errorf("looking up EWS subscription %s: %w: %s", id, ews.ErrNotReady, ans.Error)
	}
	return *ans.Subscription, nil
}

// Observe records a stored notification with the manager, wherever it
// runs.
func (e *ewsManaged) Observe(ctx context.Context, id, watermark string, at time.Time) {
	if e.held.Load() {
		e.m.Observe(ctx, id, watermark, at)
		return
	}
	e.publish(subjectEWSObserve, ewsObserved{SubscriptionID: id, Watermark: watermark, At: at})
}

// OnSubscriptionError hands an error notification to the manager,
// wherever it runs.
func (e *ewsManaged) OnSubscriptionError(ctx context.Context, se ews.SubscriptionError) {
	if e.held.Load() {
		e.m.OnSubscriptionError(ctx, se)
		return
	}
	e.publish(subjectEWSError, se)
}

// run is the leased task: the manager, answering the other ingests.
func (e *ewsManaged) run() func(context.Context) error {
	return e.task(map[string]nats.MsgHandler{
		subjectEWSLookup: func(msg *nats.Msg) {
			ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
			defer cancel()
			sub, err := e.m.Lookup(ctx, string(msg.Data))
			switch {
			case err == nil:
				e.respond(msg, ewsLookupAnswer{Subscription: &sub})
			case errors.Is(err, ews.ErrUnknownSubscription):
				e.respond(msg, ewsLookupAnswer{Unknown: true})
			default:
				e.respond(msg, ewsLookupAnswer{Error: err.Error()})
			}
		},
		subjectEWSObserve: func(msg *nats.Msg) {
			var o ewsObserved
			if json.Unmarshal(msg.Data, &o) == nil {
				e.m.Observe(context.Background(), o.SubscriptionID, o.Watermark, o.At)
			}
		},
		subjectEWSError: func(msg *nats.Msg) {
			var se ews.SubscriptionError
			if json.Unmarshal(msg.Data, &se) == nil {
				e.m.OnSubscriptionError(context.Background(), se)
			}
		},
	}, e.m.Run)
}

// graphManager is what the Graph source and the lifecycle endpoint need
// of *graph.Manager.
type graphManager interface {
	Lifecycle(ctx context.Context, body []byte) error
	OnLifecycle(ctx context.Context, l graph.Lifecycle)
	Run(ctx context.Context) error
}

// graphManaged is the Graph source's and lifecycle endpoint's view of the
// manager: the local one while this ingest holds the lease, the holder's
// over NATS otherwise.
type graphManaged struct {
	managed
	m graphManager
}

// Lifecycle handles a body of lifecycle notifications with the manager,
// wherever it runs; the holder's *httpjson.Error comes back as it is.
func (g *graphManaged) Lifecycle(ctx context.Context, body []byte) error {
	if g.held.Load() {
		return g.m.Lifecycle(ctx, body)
	}
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	msg, err := g.nc.RequestWithContext(ctx, subjectGraphLifecycle, body)
	if err != nil {
		g.log.Warn().Err(err).Msg("no ingest that runs the Graph manager answered; the lifecycle notification is answered 503")
		return &httpjson.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "the Graph subscription manager cannot be reached; retry later"}
	}
	if len(msg.Data) == 0 {
		return nil
	}
	var se httpjson.Error
	if err := json.Unmarshal(msg.Data, &se); err != nil || se.Status == 0 {
		return &httpjson.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "the Graph subscription manager answered what cannot be read; retry later"}
	}
	return &se
}

// OnLifecycle hands a lifecycle notification the Graph source received to
// the manager, wherever it runs.
func (g *graphManaged) OnLifecycle(ctx context.Context, l graph.Lifecycle) {
	if g.held.Load() {
		g.m.OnLifecycle(ctx, l)
		return
	}
	g.publish(subjectGraphOnLifecycle, l)
}

// run is the leased task: the manager, answering the other ingests.
func (g *graphManaged) run() func(context.Context) error {
	return g.task(map[string]nats.MsgHandler{
		subjectGraphLifecycle: func(msg *nats.Msg) {
			ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
			defer cancel()
			err := g.m.Lifecycle(ctx, msg.Data)
			if err == nil {
				_ = msg.Respond(nil)
				return
			}
			var se *httpjson.Error
			if !errors.As(err, &se) {
				se = &httpjson.Error{Status: http.StatusInternalServerError, Code: "internal", Message: "handling the lifecycle notifications failed"}
			}
			g.respond(msg, se)
		},
		subjectGraphOnLifecycle: func(msg *nats.Msg) {
			var l graph.Lifecycle
			if json.Unmarshal(msg.Data, &l) == nil {
				g.m.OnLifecycle(context.Background(), l)
			}
		},
	}, g.m.Run)
}

// leaseHeld is the gauge of the leases this process holds, by lease.
func leaseHeld(reg prometheus.Registerer) (*prometheus.GaugeVec, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pushproxy_lease_held",
		Help: "1 while this process holds the lease and runs its task (a subscription manager), 0 while it stands by: across ingests, exactly one should be 1.",
	}, []string{"lease"})
	if reg == nil {
		return g, nil
	}
	if err := reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector.(*prometheus.GaugeVec), nil
		}
		return nil, fmt.Errorf("registering the lease metric: %w", err)
	}
	return g, nil
}

// leased runs task under lease, for Server.Go, with the lease's gauge of
// leaseHeld at 1 while it runs.
func leased(reg prometheus.Registerer, lease *broker.Lease, name string, task func(context.Context) error) (func(context.Context) error, error) {
	held, err := leaseHeld(reg)
	if err != nil {
		return nil, err
	}
	g := held.WithLabelValues(name)
	return func(ctx context.Context) error {
		return lease.Run(ctx, func(ctx context.Context) error {
			g.Set(1)
			defer g.Set(0)
			return task(ctx)
		})
	}, nil
}
