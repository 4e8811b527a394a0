package dispatcher

import (
	"math"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
)

// decodeEvent is events.Decode with a fast path for the canonical JSON that
// ingest writes (events.Event.Encode): plain ASCII strings, integers, RFC
// 3339 times, known field names. Anything else (escapes, non-ASCII text,
// nulls, unknown or repeated fields, other spellings) takes events.Decode
// itself. Both end in the same validation, and FuzzDecodeEvent checks
// that the fast path decodes exactly what events.Decode does. It exists
// because encoding/json's reflection is most of the dispatcher's CPU per
// event.
func decodeEvent(data []byte) (events.Event, error) {
	var v events.Validator
	return decodeEventKnown(data, knownStrings{}, &v)
}

// knownStrings are strings an event is likely to repeat (the tenant and
// user of the subject's cached user): the fast path uses them instead of
// allocating copies of equal text. They change nothing but allocations.
type knownStrings struct {
	tenant, user string
}

// decodeEventKnown is decodeEvent reusing known's strings where the event
// spells the same text, and validating with v, which remembers the last
// valid tenant of the partition.
func decodeEventKnown(data []byte, known knownStrings, v *events.Validator) (events.Event, error) {
	if e, ok := fastDecodeKnown(data, known); ok {
		if err := v.Validate(&e); err != nil {
			return events.Event{}, err
		}
		return e, nil
	}
	return events.Decode(data)
}

// Field bits, to refuse repeated fields on the fast path.
const (
	fV = 1 << iota
	fTenant
	fUser
	fMailbox
	fFromMailbox
	fKind
	fUnread
	fCount
	fChangeID
	fUIDValidity
	fUID
	fOccurredAt
	fSource
	fReceivedAt
)

// fastDecode parses the canonical form; ok false means "not sure, use the
// general decoder".
func fastDecode(data []byte) (e events.Event, ok bool) {
	return fastDecodeKnown(data, knownStrings{})
}

// fastDecodeKnown is fastDecode taking the tenant and user from known, and
// the mailbox, kind and source from their usual constants, when the event
// spells the same text.
func fastDecodeKnown(data []byte, known knownStrings) (e events.Event, ok bool) {
	p := parser{data: data}
	p.ws()
	if !p.eat('{') {
		return e, false
	}
	seen := 0
	p.ws()
	if p.eat('}') {
		return e, p.end()
	}
	for {
		p.ws()
		key, ok := p.raw()
		if !ok {
			return e, false
		}
		p.ws()
		if !p.eat(':') {
			return e, false
		}
		p.ws()
		var bit int
		switch string(key) {
		case "v":
			bit, ok = fV, p.intInto(&e.Version)
		case "tenant":
			bit, ok = fTenant, p.strKnown(&e.Tenant, known.tenant)
		case "user":
			bit, ok = fUser, p.strKnown(&e.User, known.user)
		case "mailbox":
			bit, ok = fMailbox, p.strKnown(&e.Mailbox, events.Inbox)
		case "from_mailbox":
			bit, ok = fFromMailbox, p.strInto(&e.FromMailbox)
		case "kind":
			var s string
			bit, ok = fKind, p.strKnown(&s, string(events.KindNew))
			e.Kind = events.Kind(s)
		case "unread":
			var n int
			bit, ok = fUnread, p.intInto(&n)
			e.Unread = &n
		case "count":
			bit, ok = fCount, p.intInto(&e.Count)
		case "change_id":
			bit, ok = fChangeID, p.strInto(&e.ChangeID)
		case "uidvalidity":
			bit, ok = fUIDValidity, p.uint32Into(&e.UIDValidity)
		case "uid":
			bit, ok = fUID, p.uint32Into(&e.UID)
		case "occurred_at":
			bit, ok = fOccurredAt, p.timeInto(&e.OccurredAt)
		case "source":
			var s string
			bit, ok = fSource, p.strKnown(&s, string(events.SourceNative))
			e.Source = events.Source(s)
		case "received_at":
			bit, ok = fReceivedAt, p.timeInto(&e.ReceivedAt)
		default:
			return e, false
		}
		if !ok || seen&bit != 0 {
			return e, false
		}
		seen |= bit
		p.ws()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			return e, p.end()
		}
		return e, false
	}
}

type parser struct {
	data []byte
	i    int
}

func (p *parser) ws() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) eat(c byte) bool {
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (p *parser) end() bool {
	p.ws()
	return p.i == len(p.data)
}

// raw reads a string of printable ASCII without escapes and returns its
// bytes, quotes excluded.
func (p *parser) raw() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			b := p.data[start:p.i]
			p.i++
			return b, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

func (p *parser) strInto(dst *string) bool {
	b, ok := p.raw()
	*dst = string(b)
	return ok
}

// strKnown is strInto that stores known, without allocating, when the
// string read is the same text.
func (p *parser) strKnown(dst *string, known string) bool {
	b, ok := p.raw()
	if ok && known != "" && string(b) == known {
		*dst = known
		return true
	}
	*dst = string(b)
	return ok
}

// maxDigits keeps the fast path's integers far from overflow; longer ones
// take the general decoder.
const maxDigits = 15

// number reads a JSON integer (no fraction, no exponent, no leading zero)
// of at most maxDigits digits.
func (p *parser) number() (n int64, neg, ok bool) {
	neg = p.eat('-')
	digits := p.i
	for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
		n = n*10 + int64(p.data[p.i]-'0')
		p.i++
	}
	count := p.i - digits
	if count == 0 || count > maxDigits || (count > 1 && p.data[digits] == '0') {
		return 0, neg, false
	}
	if p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r', ',', '}':
		default:
			return 0, neg, false
		}
	}
	if neg {
		n = -n
	}
	return n, neg, true
}

func (p *parser) intInto(dst *int) bool {
	n, _, ok := p.number()
	*dst = int(n)
	return ok
}

// uint32Into refuses any minus sign, even "-0", as encoding/json does.
func (p *parser) uint32Into(dst *uint32) bool {
	n, neg, ok := p.number()
	if !ok || neg || n > math.MaxUint32 {
		return false
	}
	*dst = uint32(n)
	return true
}

// timeInto parses a quoted time the way encoding/json does, with
// time.Time's own UnmarshalJSON.
func (p *parser) timeInto(dst *time.Time) bool {
	start := p.i
	if _, ok := p.raw(); !ok {
		return false
	}
	return dst.UnmarshalJSON(p.data[start:p.i]) == nil
}
