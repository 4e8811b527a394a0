package dispatcher

import (
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/jsonscan"
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
	p := jsonscan.New(data)
	p.Space()
	seen := 0
	ok = p.Object(func(key []byte) bool {
		var bit int
		ok := false
		switch string(key) {
		case "v":
			bit, ok = fV, p.IntInto(&e.Version)
		case "tenant":
			bit, ok = fTenant, p.KnownString(&e.Tenant, known.tenant)
		case "user":
			bit, ok = fUser, p.KnownString(&e.User, known.user)
		case "mailbox":
			bit, ok = fMailbox, p.KnownString(&e.Mailbox, events.Inbox)
		case "from_mailbox":
			bit, ok = fFromMailbox, p.StringInto(&e.FromMailbox)
		case "kind":
			var s string
			bit, ok = fKind, p.KnownString(&s, string(events.KindNew))
			e.Kind = events.Kind(s)
		case "unread":
			var n int
			bit, ok = fUnread, p.IntInto(&n)
			e.Unread = &n
		case "count":
			bit, ok = fCount, p.IntInto(&e.Count)
		case "change_id":
			bit, ok = fChangeID, p.StringInto(&e.ChangeID)
		case "uidvalidity":
			bit, ok = fUIDValidity, p.Uint32Into(&e.UIDValidity)
		case "uid":
			bit, ok = fUID, p.Uint32Into(&e.UID)
		case "occurred_at":
			bit, ok = fOccurredAt, p.TimeInto(&e.OccurredAt)
		case "source":
			var s string
			bit, ok = fSource, p.KnownString(&s, string(events.SourceNative))
			e.Source = events.Source(s)
		case "received_at":
			bit, ok = fReceivedAt, p.TimeInto(&e.ReceivedAt)
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
	return e, ok && p.End()
}
