package dispatcher

import (
	"errors"
	"strings"
)

// errNotAckSubject is returned by ackInfoOf for a reply subject that is
// not a JetStream acknowledgement subject.
var errNotAckSubject = errors.New("reply subject is not a JetStream ack subject")

// ackPrefix starts every JetStream acknowledgement subject.
const ackPrefix = "$JS.ACK."

// ackInfo is what a message's acknowledgement subject tells about its
// delivery.
type ackInfo struct {
	streamSeq   uint64 // the event's sequence in the stream
	consumerSeq uint64 // the consumer's count of deliveries, redeliveries included
	count       uint64 // how many times this event was delivered
}

// ackInfoOf reads a message's delivery from its acknowledgement (reply)
// subject, which is
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//
// or, from newer servers,
//
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>...]
//
// It follows the rules of jetstream.Msg.Metadata (9 tokens, or at least
// 11) but allocates nothing: it runs once per event.
func ackInfoOf(reply string) (ackInfo, error) {
	if !strings.HasPrefix(reply, ackPrefix) {
		return ackInfo{}, errNotAckSubject
	}
	tokens := strings.Count(reply, ".") + 1
	// Index of <delivered> among the tokens; <sseq> and <cseq> follow it.
	var at int
	switch {
	case tokens == 9:
		at = 4
	case tokens >= 11:
		at = 6
	default:
		return ackInfo{}, errNotAckSubject
	}
	rest := reply
	for range at {
		_, rest, _ = strings.Cut(rest, ".")
	}
	d, rest, _ := strings.Cut(rest, ".")
	s, rest, _ := strings.Cut(rest, ".")
	c, _, _ := strings.Cut(rest, ".")
	return ackInfo{streamSeq: ackNum(s), consumerSeq: ackNum(c), count: ackNum(d)}, nil
}

// ackNum parses a decimal token of an ack subject as jetstream does: 0
// when empty or not all digits.
func ackNum(s string) uint64 {
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}
