package dispatcher

import (
	"errors"
	"strings"
)

// errNotAckSubject is returned by deliveryOf for a reply subject that is
// not a JetStream acknowledgement subject.
var errNotAckSubject = errors.New("reply subject is not a JetStream ack subject")

// ackPrefix starts every JetStream acknowledgement subject.
const ackPrefix = "$JS.ACK."

// deliveryOf reads the stream sequence and the delivery count of a
// message from its acknowledgement (reply) subject, which is
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//
// or, from newer servers,
//
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>...]
//
// It follows the rules of jetstream.Msg.Metadata (9 tokens, or at least
// 11) but allocates nothing: it runs once per event.
func deliveryOf(reply string) (seq, delivered uint64, err error) {
	if !strings.HasPrefix(reply, ackPrefix) {
		return 0, 0, errNotAckSubject
	}
	tokens := strings.Count(reply, ".") + 1
	// Index of <delivered> among the tokens; <sseq> follows it.
	var at int
	switch {
	case tokens == 9:
		at = 4
	case tokens >= 11:
		at = 6
	default:
		return 0, 0, errNotAckSubject
	}
	rest := reply
	for range at {
		_, rest, _ = strings.Cut(rest, ".")
	}
	d, rest, _ := strings.Cut(rest, ".")
	s, _, _ := strings.Cut(rest, ".")
	return ackNum(s), ackNum(d), nil
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
