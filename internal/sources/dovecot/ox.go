// Package dovecot parses what Dovecot's push-notification drivers send:
// the OX driver's JSON (push_notification_driver = ox:url=...) and the JSON
// of pushproxy's Lua script (deploy/dovecot/pushproxy.lua, driver lua).
//
// Neither parser keeps message content: the sender, subject and snippet
// that Dovecot includes are never decoded.
//
// Doveadm is a sources.Counter that reads the true unseen counts through
// Dovecot's doveadm HTTP API.
package dovecot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// OXNotification is the part of the OX driver's JSON that pushproxy reads.
// Dovecot also sends "from", "subject" and "snippet", which are left out on
// purpose. Fields Dovecot may add in later versions are ignored.
type OXNotification struct {
	User        string `json:"user"`
	Event       string `json:"event"`
	Folder      string `json:"folder"`
	UIDValidity uint32 `json:"imap-uidvalidity"`
	UID         uint32 `json:"imap-uid"`
	Unseen      *int   `json:"unseen"`
}

// oxEvent is the only event the OX driver sends (Dovecot 2.3 writes it
// "messageNew"; its documentation says "MessageNew").
const oxEvent = "messagenew"

// maxFolderInID is the longest folder name used as is in a change id;
// longer names are replaced by their hash so the id stays within
// events.MaxChangeIDLen.
const maxFolderInID = 256

// ParseOX reads one OX driver notification. The event is a new message in
// the folder, with the folder's unseen count as its authoritative unread
// count, and the change id "ox:<folder>/<uidvalidity>/<uid>".
func ParseOX(body []byte) ([]sources.Item, error) {
	if err := sources.Object(body); err != nil {
		return nil, err
	}
	var n OXNotification
	if err := sources.Lenient(body, &n, ""); err != nil {
		return []sources.Item{{Err: err}}, nil
	}
	return []sources.Item{n.item()}, nil
}

func (n *OXNotification) item() sources.Item {
	if strings.ToLower(n.Event) != oxEvent {
		return sources.Item{Err: sources.Invalid("event", "unsupported event %q (the OX driver reports only messageNew)", sources.Clip(n.Event))}
	}
	if n.UID == 0 {
		return sources.Item{Err: sources.Invalid("imap-uid", "required: a positive message UID")}
	}
	return sources.Item{Event: events.Event{
		Version:     events.SchemaVersion,
		User:        n.User,
		Mailbox:     n.Folder,
		Kind:        events.KindNew,
		Unread:      n.Unseen,
		ChangeID:    fmt.Sprintf("ox:%s/%d/%d", folderID(n.Folder), n.UIDValidity, n.UID),
		UIDValidity: n.UIDValidity,
		UID:         n.UID,
		Source:      events.SourceDovecotOX,
	}}
}

// folderID is the folder as it appears in a change id.
func folderID(folder string) string {
	if len(folder) <= maxFolderInID {
		return folder
	}
	sum := sha256.Sum256([]byte(folder))
	return "sha256:" + hex.EncodeToString(sum[:])
}
