package ews

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"github.com/pushproxy/pushproxy/internal/events"
)

// Map turns the events of one notification of subscription sub into
// mailbox events, in the order Exchange listed them:
//
//   - NewMailEvent of an item: new, in its parent folder.
//   - ModifiedEvent of a folder with UnreadCount: snapshot of that folder
//     with Unread = UnreadCount (the authoritative count).
//   - DeletedEvent of an item: deleted, from its parent folder.
//   - MovedEvent of an item: moved, from OldParentFolderId to ParentFolderId.
//   - Everything else yields nothing: StatusEvent is a heartbeat; a
//     delivered message raises a CreatedEvent beside its NewMailEvent, so
//     counting it would count the message twice, and a message created
//     otherwise (a draft, a sent copy) is not new mail; CopiedEvent,
//     FreeBusyChangedEvent, a ModifiedEvent of an item (e.g. marked read)
//     and events about folders themselves say nothing about the unread
//     count that the folder's ModifiedEvent does not say exactly.
//
// A server that sends folder ModifiedEvents without UnreadCount (the schema
// makes it optional; Amazon WorkMail's documented example has none) leaves
// read and unread changes unseen: the count then only moves with new,
// deleted and moved messages, as an estimate.
//
// Mailbox names are EWS folder ids, except that sub.InboxFolderID becomes
// events.Inbox. OccurredAt is the event's TimeStamp. ChangeID is
// "ews:<watermark>/<event type>/<hash of the object id>": the watermark
// identifies the event in the mailbox's event table, so a retried or
// re-batched notification gives the same id; the type and object hash tell
// apart the item and folder events of one change. An event without a
// watermark (the schema allows it) uses "<PreviousWatermark>+<index>".
// The events are normalised but not validated.
func Map(n *Notification, sub Subscription) []events.Event {
	var out []events.Event
	for i := range n.Events {
		ev := &n.Events[i]
		e, ok := mapEvent(ev, sub)
		if !ok {
			continue
		}
		e.Tenant = sub.Tenant
		e.User = sub.User
		e.OccurredAt = ev.TimeStamp
		e.Source = events.SourceEWS
		e.ChangeID = changeID(n, i, ev)
		e.Normalize()
		out = append(out, e)
	}
	return out
}

func mapEvent(ev *Event, sub Subscription) (events.Event, bool) {
	switch {
	case ev.Type == EventNewMail && ev.ItemID != nil:
		return events.Event{Kind: events.KindNew, Mailbox: sub.mailbox(ev.ParentFolderID)}, true
	case ev.Type == EventModified && ev.FolderID != nil && ev.UnreadCount != nil:
		return events.Event{Kind: events.KindSnapshot, Mailbox: sub.mailbox(ev.FolderID), Unread: events.IntPtr(*ev.UnreadCount)}, true
	case ev.Type == EventDeleted && ev.ItemID != nil:
		return events.Event{Kind: events.KindDeleted, Mailbox: sub.mailbox(ev.ParentFolderID)}, true
	case ev.Type == EventMoved && ev.ItemID != nil:
		return events.Event{Kind: events.KindMoved, Mailbox: sub.mailbox(ev.ParentFolderID), FromMailbox: sub.mailbox(ev.OldParentFolderID)}, true
	}
	return events.Event{}, false
}

func changeID(n *Notification, index int, ev *Event) string {
	wm := ev.Watermark
	if wm == "" {
		wm = n.PreviousWatermark + "+" + strconv.Itoa(index)
	}
	id := ""
	if obj := ev.Object(); obj != nil {
		id = obj.ID
	}
	sum := sha256.Sum256([]byte(id))
	return "ews:" + wm + "/" + string(ev.Type) + "/" + hex.EncodeToString(sum[:8])
}
