package dispatcher

import "github.com/nats-io/nats.go/jetstream"

// received is what a held event keeps of the message that brought it: its
// subject and bytes, until applied and for a merge after a conflict, and
// the subject its acknowledgements go to.
type received struct {
	subject string
	data    []byte
	// reply is the consumer's acknowledgement subject; "" for an event
	// that catch-up read from the stream, which has no delivery to
	// acknowledge.
	reply string
}

// receivedOf keeps what a held event needs of m; the rest of m (the
// headers parsed into a map, the library's wrappers) can be collected.
// The data stays a slice of the buffer the client read the message into.
func receivedOf(m jetstream.Msg) received {
	return received{subject: m.Subject(), data: m.Data(), reply: m.Reply()}
}

// replayed is an event read from the stream by catch-up rather than
// delivered by the partition's consumer: it has nothing to acknowledge.
func replayed(m jetstream.Msg) received {
	return received{subject: m.Subject(), data: m.Data()}
}

// The acknowledgements of the JetStream protocol that a dispatcher sends,
// as the library's jetstream.Msg sends them: a message to the delivery's
// reply subject.
var (
	ackBody        = []byte("+ACK")
	inProgressBody = []byte("+WPI")
)

// termPrefix starts a termination with a reason: "+TERM <reason>".
const termPrefix = "+TERM "

// ack acknowledges the event: the consumer is done with it.
func (w *worker) ack(r received) error { return w.acknowledge(r, ackBody) }

// inProgress tells the consumer the event is still being worked on, so
// that it is not redelivered after AckWait.
func (w *worker) inProgress(r received) error { return w.acknowledge(r, inProgressBody) }

// term ends the event for good; the server emits a MSG_TERMINATED
// advisory that carries reason.
func (w *worker) term(r received, reason string) error {
	return w.acknowledge(r, []byte(termPrefix+reason))
}

// acknowledge sends body to the reply subject; an event read by
// catch-up has none, and nothing is sent.
func (w *worker) acknowledge(r received, body []byte) error {
	if r.reply == "" {
		return nil
	}
	return w.env.nc.Publish(r.reply, body)
}
