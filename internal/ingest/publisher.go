package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/events"
)

// ErrUnavailable matches every publish failure: JetStream did not
// acknowledge, so the source must retry later.
var ErrUnavailable = errors.New("JetStream unavailable")

// Ack is the stream's answer for one published event.
type Ack struct {
	// Seq is the event's stream sequence; for a duplicate, that of the
	// copy stored first.
	Seq uint64
	// Duplicate is true when the stream already held the change.
	Duplicate bool
}

// Publisher publishes events to the MAIL stream with their deduplication
// id, asynchronously, and waits for every acknowledgement.
type Publisher struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	keyer *events.Keyer
	// headers holds message headers (nats.Header) to reuse: those of a
	// request whose messages are all acknowledged, which JetStream no
	// longer reads.
	headers sync.Pool
}

// DefaultMaxPending is how many publishes may await their acknowledgement
// at once across all requests.
const DefaultMaxPending = 8192

// NewPublisher returns a publisher on nc. ackTimeout bounds how long an
// acknowledgement is awaited at all (a request usually waits less, see
// Publish); keyer names subjects and deduplication ids.
func NewPublisher(nc *nats.Conn, keyer *events.Keyer, ackTimeout time.Duration) (*Publisher, error) {
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(ackTimeout),
		jetstream.WithPublishAsyncMaxPending(DefaultMaxPending),
	)
	if err != nil {
		return nil, fmt.Errorf("opening JetStream for publishing: %w", err)
	}
	return &Publisher{nc: nc, js: js, keyer: keyer}, nil
}

// Publish sends every event to mail.<tenant>.<user> with header
// Nats-Msg-Id set to the keyer's MsgID, then waits until the stream has
// acknowledged all of them or ctx ends. It returns one Ack per event in
// order, or an error matching ErrUnavailable; after an error some events
// may be stored, and publishing them again is deduplicated by the stream.
// The events must be valid.
func (p *Publisher) Publish(ctx context.Context, evs []events.Event) ([]Ack, error) {
	if status := p.nc.Status(); status != nats.CONNECTED {
		return nil, fmt.Errorf("%w: the NATS connection is %s", ErrUnavailable, status)
	}
	var opts []jetstream.PublishOpt
	if deadline, ok := ctx.Deadline(); ok {
		opts = append(opts, jetstream.WithStallWait(max(time.Until(deadline), time.Millisecond)))
	}
	msgs, err := p.messages(evs)
	if err != nil {
		return nil, err
	}
	// The same change twice in one request is published once: a clustered
	// stream answers a copy whose original is still being stored with an
	// error, not as a duplicate. The copy is reported as a duplicate of
	// the original.
	firstOf := sameChanges(msgs)
	futures := make([]jetstream.PubAckFuture, len(evs))
	for i := range msgs {
		if firstOf[i] != i {
			continue
		}
		if futures[i], err = p.js.PublishMsgAsync(&msgs[i], opts...); err != nil {
			return nil, fmt.Errorf("%w: publishing event %d: %w", ErrUnavailable, i, err)
		}
	}
	acks := make([]Ack, len(evs))
	for i, f := range futures {
		if f == nil {
			acks[i] = Ack{Seq: acks[firstOf[i]].Seq, Duplicate: true}
			continue
		}
		select {
		case ack := <-f.Ok():
			acks[i] = Ack{Seq: ack.Sequence, Duplicate: ack.Duplicate}
		case err := <-f.Err():
			return nil, fmt.Errorf("%w: event %d: %w", ErrUnavailable, i, err)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: waiting for acknowledgements: %w", ErrUnavailable, context.Cause(ctx))
		}
	}
	for i := range msgs {
		p.headers.Put(msgs[i].Header)
	}
	return acks, nil
}

// sameChanges maps each message to the first of the request with its
// deduplication id (itself when it is the first).
func sameChanges(msgs []nats.Msg) []int {
	firstOf := make([]int, len(msgs))
	var seen map[string]int
	for i := range msgs {
		firstOf[i] = i
		if len(msgs) == 1 {
			break
		}
		if seen == nil {
			seen = make(map[string]int, len(msgs))
		}
		id := msgs[i].Header.Get(jetstream.MsgIDHeader)
		if first, ok := seen[id]; ok {
			firstOf[i] = first
			continue
		}
		seen[id] = i
	}
	return firstOf
}

// span is where one event's encoded parts end in the request's buffers.
type span struct{ data, subject, id int }

// messages builds the stream message of each event. The data, subjects
// and deduplication ids of all events are written into three buffers
// shared by the request rather than allocated one by one. JetStream may
// keep a message until it is acknowledged (to send it again), so the
// buffers are never reused, and a header only once Publish has every
// acknowledgement of its request.
func (p *Publisher) messages(evs []events.Event) ([]nats.Msg, error) {
	const subjectSize, idSize = 64, 32
	data := make([]byte, 0, len(evs)*eventSizeHint)
	subjects := make([]byte, 0, len(evs)*subjectSize)
	ids := make([]byte, 0, len(evs)*idSize)
	ends := make([]span, len(evs))
	for i := range evs {
		e := &evs[i]
		var err error
		if data, err = e.AppendEncode(data); err != nil {
			return nil, err
		}
		// A transaction's events are usually all one user's.
		if i == 0 || e.User != evs[i-1].User || e.Tenant != evs[i-1].Tenant {
			subjects = p.keyer.AppendSubject(subjects, e.Tenant, e.User)
		}
		ids = p.keyer.AppendMsgID(ids, e)
		ends[i] = span{data: len(data), subject: len(subjects), id: len(ids)}
	}
	subjectText, idText := string(subjects), string(ids)
	values := make([]string, len(evs))
	msgs := make([]nats.Msg, len(evs))
	var prev span
	subject := ""
	for i, end := range ends {
		if end.subject != prev.subject {
			subject = subjectText[prev.subject:end.subject]
		}
		values[i] = idText[prev.id:end.id]
		header, _ := p.headers.Get().(nats.Header)
		if header == nil {
			header = make(nats.Header, 1)
		}
		header[jetstream.MsgIDHeader] = values[i : i+1 : i+1]
		msgs[i] = nats.Msg{Subject: subject, Data: data[prev.data:end.data:end.data], Header: header}
		prev = end
	}
	return msgs, nil
}

// eventSizeHint is the room an encoded event usually takes.
const eventSizeHint = 256
