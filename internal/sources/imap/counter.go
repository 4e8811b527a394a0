package imap

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// Counter is a sources.Counter that reads unseen counts over IMAP, one
// connection per mailbox, at most Config.MaxConns at once. It is safe for
// concurrent use.
type Counter struct {
	connector
	// conns holds a token per open connection.
	conns chan struct{}
}

var _ sources.Counter = (*Counter)(nil)

// New checks cfg and builds the counter. It does not connect.
func New(cfg Config) (*Counter, error) {
	conn, err := newConnector(cfg)
	if err != nil {
		return nil, err
	}
	return &Counter{connector: conn, conns: make(chan struct{}, conn.cfg.MaxConns)}, nil
}

// Name is "imap".
func (c *Counter) Name() string { return "imap" }

// Counts reads the unseen count of each mailbox, several at once within
// the connection bound.
func (c *Counter) Counts(ctx context.Context, boxes []sources.Mailbox) []sources.Count {
	counts := make([]sources.Count, len(boxes))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(len(boxes), c.cfg.MaxConns) {
		wg.Go(func() {
			for i := range next {
				counts[i] = c.count(ctx, boxes[i])
			}
		})
	}
	for i := range boxes {
		next <- i
	}
	close(next)
	wg.Wait()
	return counts
}

// count reads one mailbox's unseen count.
func (c *Counter) count(ctx context.Context, box sources.Mailbox) sources.Count {
	login, err := c.loginFor(box)
	if err != nil {
		return sources.Count{Err: err}
	}
	what := fmt.Sprintf("reading unseen count of %s/%s over IMAP", box.User, box.Name)
	if err := ctx.Err(); err != nil {
		return sources.Count{Err: fmt.Errorf("%s: %w", what, err)}
	}
	select {
	case c.conns <- struct{}{}:
		defer func() { <-c.conns }()
	case <-ctx.Done():
		return sources.Count{Err: fmt.Errorf("%s: waiting for a free connection: %w", what, ctx.Err())}
	}
	n, err := c.readUnseen(ctx, box.Name, login)
	switch {
	case errors.Is(err, sources.ErrNotServed):
		return sources.Count{Err: sources.ErrNotServed}
	case err != nil:
		return sources.Count{Err: fmt.Errorf("%s: %w", what, err)}
	}
	return sources.Count{Unread: n}
}
