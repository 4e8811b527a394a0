package dovecot

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// LuaVersion is the version of the Lua script's JSON that this package reads.
const LuaVersion = 1

// MaxTxnLen bounds the transaction id of a Lua notification.
const MaxTxnLen = 200

// DefaultMaxLuaEvents is the default bound on the events of one transaction.
const DefaultMaxLuaEvents = 1000

// IMAP system flags that decide how a flag change maps to a kind. Dovecot
// 2.3's Lua driver names the flags a FlagsSet or FlagsClear changed
// (\Seen, \Flagged, ...); the script passes the names on.
const (
	FlagSeen    = `\Seen`
	FlagDeleted = `\Deleted`
	FlagRecent  = `\Recent`
)

// LuaNotification is one transaction as deploy/dovecot/pushproxy.lua
// sends it: the user, a transaction id unique to that transaction (the
// script sends the same id when it retries), the changes in order, and the
// unseen count of each touched mailbox and of INBOX after the transaction.
type LuaNotification struct {
	V      *int              `json:"v"`
	User   string            `json:"user"`
	Txn    string            `json:"txn"`
	Events []json.RawMessage `json:"events"`
	Unseen map[string]int    `json:"unseen"`
}

// LuaEvent is one change of a transaction. Event is Dovecot's name for it
// (MessageNew, MessageAppend, MessageRead, MessageTrash, MessageExpunge,
// FlagsSet, FlagsClear). Flags names the system flags set or cleared and
// Keywords is the number of keywords set or cleared. Count, when above
// one, says the script folded that many changes of one kind and mailbox
// into this event (it does so past its own per-transaction limit).
type LuaEvent struct {
	Event       string   `json:"event"`
	Mailbox     string   `json:"mailbox"`
	UIDValidity uint32   `json:"uidvalidity"`
	UID         uint32   `json:"uid"`
	Flags       []string `json:"flags"`
	Keywords    int      `json:"keywords"`
	Count       int      `json:"count"`
}

// LuaOptions bounds what one transaction may hold.
type LuaOptions struct {
	// MaxEvents is the most events one transaction may carry (DefaultMaxLuaEvents when 0).
	MaxEvents int
}

// ParseLua reads one transaction of the Lua script. Each change becomes an
// event (see LuaEvent.Kind for the mapping; flag changes already reported
// as MessageRead or MessageTrash are dropped) with the change id
// "<txn>/<index>". Each mailbox's unseen count is attached to the last event
// of that mailbox; a mailbox with a count and no event gets a snapshot event
// "<txn>/s<k>" (k counts those mailboxes in name order). A transaction with
// neither events nor counts gives no item.
func ParseLua(body []byte, opt LuaOptions) ([]sources.Item, error) {
	max := opt.MaxEvents
	if max <= 0 {
		max = DefaultMaxLuaEvents
	}
	if err := sources.Object(body); err != nil {
		return nil, err
	}
	var n LuaNotification
	if err := sources.Strict(body, &n, ""); err != nil {
		return nil, err
	}
	if err := n.check(max); err != nil {
		return nil, err
	}
	items := make([]sources.Item, 0, len(n.Events)+len(n.Unseen))
	for i, raw := range n.Events {
		item, keep := n.item(i, raw)
		if keep {
			items = append(items, item)
		}
	}
	return n.attachUnseen(items), nil
}

func (n *LuaNotification) check(max int) error {
	switch {
	case n.V != nil && *n.V != LuaVersion:
		return sources.Invalid("v", "unsupported version %d (this server reads %d)", *n.V, LuaVersion)
	case n.Txn == "":
		return sources.Invalid("txn", "required: a transaction id, the same when the script retries")
	case len(n.Txn) > MaxTxnLen || !utf8.ValidString(n.Txn):
		return sources.Invalid("txn", "must be valid UTF-8 of at most %d bytes", MaxTxnLen)
	case len(n.Events)+len(n.Unseen) > max:
		return sources.TooLarge("%d events and %d unseen counts in one transaction; at most %d are allowed", len(n.Events), len(n.Unseen), max)
	}
	return nil
}

// item maps event i; keep is false for an event that reports nothing new.
func (n *LuaNotification) item(i int, raw json.RawMessage) (item sources.Item, keep bool) {
	var le LuaEvent
	if err := sources.Strict(raw, &le, fmt.Sprintf("events[%d].", i)); err != nil {
		return sources.Item{Err: err}, true
	}
	kind, keep, err := le.Kind()
	if err != nil {
		return sources.Item{Err: sources.Invalid(fmt.Sprintf("events[%d].event", i), "%v", err)}, true
	}
	if !keep {
		return sources.Item{}, false
	}
	return sources.Item{Event: events.Event{
		Version:     events.SchemaVersion,
		User:        n.User,
		Mailbox:     le.Mailbox,
		Kind:        kind,
		Count:       le.Count,
		ChangeID:    fmt.Sprintf("%s/%d", n.Txn, i),
		UIDValidity: le.UIDValidity,
		UID:         le.UID,
		Source:      events.SourceDovecotLua,
	}}, true
}

// Kind maps a Dovecot event to an event kind: MessageNew and MessageAppend
// are new, MessageRead is read, MessageTrash and MessageExpunge are
// deleted, FlagsClear of \Seen is unread and any other flag or keyword
// change is flags. keep is false for changes that add nothing: setting only
// \Seen or \Deleted (Dovecot reports those again as MessageRead and
// MessageTrash), a flag event that changes no flag (Dovecot 2.3 sends one
// with every flag change), and mailbox events.
func (e *LuaEvent) Kind() (kind events.Kind, keep bool, err error) {
	switch e.Event {
	case "MessageNew", "MessageAppend":
		return events.KindNew, true, nil
	case "MessageRead":
		return events.KindRead, true, nil
	case "MessageTrash", "MessageExpunge":
		return events.KindDeleted, true, nil
	case "FlagsClear":
		if slices.Contains(e.Flags, FlagSeen) {
			return events.KindUnread, true, nil
		}
		return events.KindFlags, e.otherFlags() || e.Keywords > 0, nil
	case "FlagsSet":
		return events.KindFlags, e.otherFlags() || e.Keywords > 0, nil
	case "MailboxCreate", "MailboxDelete", "MailboxRename", "MailboxSubscribe", "MailboxUnsubscribe":
		return "", false, nil
	}
	return "", false, fmt.Errorf("unknown Dovecot event %q", sources.Clip(e.Event))
}

// otherFlags reports whether a flag other than \Seen, \Deleted and
// \Recent changed: those three are reported by other events or not at all.
func (e *LuaEvent) otherFlags() bool {
	return slices.ContainsFunc(e.Flags, func(f string) bool {
		return f != FlagSeen && f != FlagDeleted && f != FlagRecent
	})
}

// attachUnseen puts each unseen count on the last event of its mailbox, or
// on a new snapshot event.
func (n *LuaNotification) attachUnseen(items []sources.Item) []sources.Item {
	mailboxes := make([]string, 0, len(n.Unseen))
	for mb := range n.Unseen {
		mailboxes = append(mailboxes, mb)
	}
	slices.Sort(mailboxes)
	for k, mb := range mailboxes {
		unread := n.Unseen[mb]
		if last := lastOf(items, mb); last >= 0 {
			items[last].Event.Unread = &unread
			continue
		}
		items = append(items, sources.Item{Event: events.Event{
			Version:  events.SchemaVersion,
			User:     n.User,
			Mailbox:  mb,
			Kind:     events.KindSnapshot,
			Unread:   &unread,
			ChangeID: fmt.Sprintf("%s/s%d", n.Txn, k),
			Source:   events.SourceDovecotLua,
		}})
	}
	return items
}

// lastOf is the index of the last good item of mailbox, or -1.
func lastOf(items []sources.Item, mailbox string) int {
	for i := len(items) - 1; i >= 0; i-- {
		if items[i].Err == nil && sameMailbox(items[i].Event.Mailbox, mailbox) {
			return i
		}
	}
	return -1
}

// sameMailbox compares mailbox names the way events.Normalize does: INBOX
// in any case is INBOX.
func sameMailbox(a, b string) bool {
	if strings.EqualFold(a, events.Inbox) {
		return strings.EqualFold(b, events.Inbox)
	}
	return a == b
}
