package imap

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Source is the source of the watcher's snapshots.
const Source = events.SourceIMAP

// mailboxState is what one reading of a watched mailbox found.
type mailboxState struct {
	// uidValidity and messages are the mailbox's UIDVALIDITY and message
	// count as the session knows them (informative: they only name the
	// state in the change id).
	uidValidity uint32
	messages    uint32
	// unseen is the exact count of messages without \Seen.
	unseen int
}

// watched is one watched mailbox and what its sessions learnt of it. Only
// the mailbox's watch goroutine uses it.
type watched struct {
	box   sources.Mailbox
	login login
	// last is the state last read, and gen counts the changes of state
	// this run saw.
	last mailboxState
	gen  uint64
	// queued is the change id of the last snapshot handed to publishing.
	queued string
	// connected is true while a session is logged in with the Inbox open.
	connected atomic.Bool
}

// snapshot is the event stating st, read at now. Its change id is
//
//	imap:<run>.<gen>:<uidvalidity>:<messages>:<unseen>
//
// where gen counts the changes of state this run saw: the same state read
// again (after a reconnect, or an IDLE refresh) has the same id, which the
// stream deduplicates, while a state that comes back after another (3
// unseen, 2, 3 again: a message read and marked unread within the
// stream's duplicate window) gets a new id and is not dropped as a
// duplicate. run, random per Run, keeps the ids of a restarted watcher
// apart from the last run's; its first snapshots are published again,
// which a snapshot makes harmless.
func (u *watched) snapshot(run string, st mailboxState, now time.Time) events.Event {
	if u.gen == 0 || st != u.last {
		u.gen++
		u.last = st
	}
	unread := min(st.unseen, events.MaxUnread)
	id := make([]byte, 0, 64)
	id = append(id, "imap:"...)
	id = append(id, run...)
	id = append(id, '.')
	id = strconv.AppendUint(id, u.gen, 10)
	id = append(id, ':')
	id = strconv.AppendUint(id, uint64(st.uidValidity), 10)
	id = append(id, ':')
	id = strconv.AppendUint(id, uint64(st.messages), 10)
	id = append(id, ':')
	id = strconv.AppendInt(id, int64(st.unseen), 10)
	return events.Event{
		Version:    events.SchemaVersion,
		Tenant:     u.box.Tenant,
		User:       u.box.User,
		Mailbox:    u.box.Name,
		Kind:       events.KindSnapshot,
		Unread:     &unread,
		Count:      1,
		ChangeID:   string(id),
		OccurredAt: now.UTC(),
		Source:     Source,
	}
}

// newRunID is a random name of one Run, for the change ids.
func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
