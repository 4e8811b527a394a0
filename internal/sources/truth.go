package sources

import (
	"context"
	"errors"
)

// Mailbox names one user's mailbox at its mail system.
type Mailbox struct {
	Tenant string
	User   string
	// Name is the mailbox whose unseen messages are counted (events.Inbox
	// for the badge).
	Name string
}

// Count is what a Counter read for one mailbox: its unseen count, or why it
// could not be read.
type Count struct {
	Unread int
	// Err is ErrNotServed when the counter does not know the user, and any
	// other error when the mail system could not answer.
	Err error
}

// Counter reads the true unseen counts of mailboxes from a mail system:
// the source of truth that reconciliation compares badges with. A counter
// may read many mailboxes in one request (Graph's $batch); one that cannot
// reads them one by one. It returns one Count per mailbox, in order, and is
// safe for concurrent use.
type Counter interface {
	// Name is the counter's kind (doveadm, imap, graph, ews), for logs and
	// metric labels.
	Name() string
	// Counts reads the unseen count of each mailbox. A canceled ctx ends
	// the reads; the unread ones carry ctx's error.
	Counts(ctx context.Context, boxes []Mailbox) []Count
}

// ErrNotServed is a Count's error when the counter does not serve the
// mailbox's tenant or user (another counter may).
var ErrNotServed = errors.New("mailbox not served by this counter")
