// Package replay reads one user's events back from the MAIL stream and
// shows what the dispatcher made of them: the unread count after each event
// (internal/unread's Apply) and the pushes the coalescing core
// (internal/coalesce) gives for that sequence. It is a debugging tool: the
// stream keeps events for its max age (7 days by default), so an operator
// can see why a badge showed what it showed.
//
// [Read] fetches the messages with an ordered consumer filtered on the
// user's subject; [Compute] is pure and turns messages into a [Report];
// [Report.Format] prints it. [Repush] makes the recomputed count the user's
// state and pushes it once to the user's devices.
package replay

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/scan"
	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// Message is one stored event as read from the stream.
type Message struct {
	// Seq is the MAIL stream sequence.
	Seq uint64
	// Stored is when the stream stored it: when the dispatcher could first
	// see it.
	Stored time.Time
	// Data is the message body.
	Data []byte
}

// Options selects and interprets the events of a replay.
type Options struct {
	// Tenant and User name the user. Required.
	Tenant string
	User   string
	// Since, when set, skips events stored before it.
	Since time.Time
	// Until, when set, stops at the last event stored at or before it.
	// Otherwise Read stops at the last event present when it started.
	Until time.Time
	// Coalesce are the coalescing timers to simulate; the defaults when zero.
	Coalesce coalesce.Config
	// Unread says which mailbox is counted; the Inbox when zero.
	Unread unread.Options
	// Progress, when set, is told after each event Read reads how many
	// it has read and how many it expects in all.
	Progress func(done, total int)
}

// ErrNoEvents is returned by Read when the stream holds no event of the
// user in the range.
var ErrNoEvents = errors.New("no events of this user in the stream for this time range")

// Read fetches the user's stored events in stream order with an ordered
// consumer filtered on keyer.StoredSubjectFilter, between opts.Since and
// opts.Until (or the last event present when it started).
func Read(ctx context.Context, js jetstream.JetStream, keyer *events.Keyer, opts Options) ([]Message, error) {
	var out []Message
	err := scan.Stream(ctx, js, broker.StreamMail, scan.Options{
		Filters: []string{keyer.StoredSubjectFilter(opts.Tenant, opts.User)},
		Since:   opts.Since,
		Until:   opts.Until,
	}, func(m scan.Message) error {
		out = append(out, Message{Seq: m.Seq, Stored: m.Stored, Data: m.Data})
		if opts.Progress != nil {
			opts.Progress(len(out), len(out)+int(m.Left))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNoEvents
	}
	return out, nil
}

// Step is one event of a replay and the count after it.
type Step struct {
	Message
	// Event is the decoded event; zero when Invalid is set.
	Event events.Event
	// Invalid says why the message is not a valid event; the dispatcher
	// terminates such messages, so they change nothing.
	Invalid string
	// Foreign is set when the event names another user: the keyed subject
	// matched but the payload did not (it should never happen).
	Foreign bool
	// Before and After are the unread counts around the event; Exact
	// tells whether After is authoritative or an estimate.
	Before, After int
	Exact         bool
	// Authoritative is true when the event set the count (it carried the
	// counted mailbox's unread count).
	Authoritative bool
	// Observed is true when the coalescing core was told about the event:
	// every valid event of the user.
	Observed bool
}

// Report is the outcome of a replay.
type Report struct {
	Tenant, User string
	// Steps are the events in stream order.
	Steps []Step
	// Pushes are the coalescing core's decisions, Skips included, as if
	// every push were delivered the moment it became due.
	Pushes []coalesce.Push
	// Final is the state after the last event.
	Final unread.State
	// Coalesce are the timers that were simulated.
	Coalesce coalesce.Config
}

// Compute replays msgs, in order, for opts.Tenant and opts.User, as the
// dispatcher does: each valid event of the user is applied to the unread
// state (which starts empty, so a count no authoritative event set is an
// estimate from zero) and then shown to the coalescing core at the time it
// was stored, whether it changed the count or not.
func Compute(msgs []Message, opts Options) Report {
	cfg := opts.Coalesce.WithDefaults()
	r := Report{Tenant: opts.Tenant, User: opts.User, Coalesce: cfg}
	key := events.TenantToken(opts.Tenant) + "/" + opts.User
	mailbox := opts.Unread.Mailbox
	if mailbox == "" {
		mailbox = events.Inbox
	}
	var inputs []coalesce.Input
	state := unread.State{}
	for _, m := range msgs {
		step := Step{Message: m, Before: state.Count, After: state.Count, Exact: state.Exact}
		ev, err := events.Decode(m.Data)
		switch {
		case err != nil:
			step.Invalid = err.Error()
		case ev.Tenant != opts.Tenant || !sameUser(ev.User, opts.User):
			step.Event, step.Foreign = ev, true
		default:
			step.Event = ev
			state, _ = unread.Apply(state, &ev, m.Seq, opts.Unread)
			step.After, step.Exact = state.Count, state.Exact
			step.Authoritative = ev.Unread != nil && ev.Mailbox == mailbox
			step.Observed = true
			inputs = append(inputs, coalesce.Input{At: m.Stored, Key: key, Update: coalesce.Update{
				Count: step.After, Seq: m.Seq, Change: coalesce.ChangeOf(step.Before, step.After),
			}})
		}
		r.Steps = append(r.Steps, step)
	}
	r.Final = state
	r.Pushes = coalesce.Simulate(cfg, inputs)
	return r
}

// sameUser compares addresses as events.Keyer does: in lower case.
func sameUser(a, b string) bool {
	return strings.EqualFold(a, b)
}
