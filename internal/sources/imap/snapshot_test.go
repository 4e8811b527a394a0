package imap

import (
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

func TestSnapshotChangeIDs(t *testing.T) {
	a := mailboxState{uidValidity: 7, messages: 3, unseen: 2}
	b := mailboxState{uidValidity: 7, messages: 3, unseen: 1}
	cases := []struct {
		name   string
		states []mailboxState
		// same[i] tells that snapshot i+1 has the id of snapshot i.
		same []bool
		last string
	}{
		{"same state read again", []mailboxState{a, a, a}, []bool{true, true}, "imap:run1.1:7:3:2"},
		{"a state that comes back", []mailboxState{a, b, a}, []bool{false, false}, "imap:run1.3:7:3:2"},
		{"new UIDVALIDITY", []mailboxState{a, {uidValidity: 8, messages: 3, unseen: 2}}, []bool{false}, "imap:run1.2:8:3:2"},
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := &watched{box: sources.Mailbox{Tenant: "example.com", User: "alice@example.com", Name: events.Inbox}}
			var ids []string
			var e events.Event
			for _, st := range tc.states {
				e = u.snapshot("run1", st, now)
				ids = append(ids, e.ChangeID)
			}
			for i, same := range tc.same {
				if (ids[i] == ids[i+1]) != same {
					t.Errorf("ids %v: %d and %d alike %v, want %v", ids, i, i+1, !same, same)
				}
			}
			if e.ChangeID != tc.last {
				t.Errorf("last id %s, want %s", e.ChangeID, tc.last)
			}
			if *e.Unread != tc.states[len(tc.states)-1].unseen || !e.OccurredAt.Equal(now) || e.OccurredAt.Location() != time.UTC {
				t.Errorf("snapshot %+v", e)
			}
		})
	}
	// Another run names its states apart.
	u := &watched{}
	if u.snapshot(newRunID(), a, now).ChangeID == (&watched{}).snapshot(newRunID(), a, now).ChangeID {
		t.Error("two runs share a change id")
	}
	if e := u.snapshot("r", mailboxState{unseen: events.MaxUnread + 1}, now); *e.Unread != events.MaxUnread {
		t.Errorf("unread %d past the limit", *e.Unread)
	}
}
