package imap

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	goimap "github.com/emersion/go-imap"
	"github.com/emersion/go-imap/client"
	"github.com/emersion/go-imap/commands"
	"github.com/emersion/go-imap/responses"
)

// session is one connection of a watched user: log in, EXAMINE the
// mailbox, read its unseen count, then IDLE until it changes and read the
// count again, until the connection fails or the watcher stops.
//
// The commands run with this package's own response handlers, which see
// every response the server sends while a command runs (the client gives
// them the first look), so the session keeps its own view of the mailbox
// and never reads the client's (whose fields its reader goroutine
// writes). The client's Updates channel stays nil: a change the server
// would report between two commands, which servers do not do in practice
// (and RFC 3501 forbids for EXPUNGE), is only seen at the next IDLE
// refresh, when the count is read again.
type session struct {
	w     *Watcher
	u     *watched
	runID string
	cl    *client.Client
	// conn is the session's connection.
	conn *sessionConn
	// idle and esearch tell that the server offers IDLE (RFC 2177) and
	// ESEARCH (RFC 4731).
	idle, esearch bool
	// uidValidity and messages are the mailbox's as the responses tell;
	// the client's reader goroutine writes them while a command runs, the
	// session reads them after.
	uidValidity, messages uint32
	// bye tells that the server said BYE.
	bye atomic.Bool
}

// run runs the session until it fails or ctx ends. healthy tells that it
// read the count at least once, so that the back-off starts over.
func (s *session) run(ctx context.Context) (healthy bool, err error) {
	cfg := &s.w.cfg
	select {
	case s.w.logins <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	setup, cancel := context.WithTimeout(ctx, cfg.Server.Timeout)
	s.cl, s.conn, err = s.w.conn.open(setup, s.u.login)
	cancel()
	<-s.w.logins
	if err != nil {
		return false, err
	}
	defer s.conn.Close()
	// Once ctx ends, the session has ShutdownTimeout to end IDLE and log
	// out; after that every read and write fails.
	stop := context.AfterFunc(ctx, func() { s.conn.windDown(cfg.ShutdownTimeout) })
	defer stop()
	s.cl.Timeout = cfg.Server.Timeout
	if err := s.capabilities(); err != nil {
		return false, fmt.Errorf("reading capabilities: %w", err)
	}
	if err := s.examine(); err != nil {
		return false, fmt.Errorf("opening %s read-only: %w", s.u.box.Name, err)
	}
	s.w.metrics.connected.Inc()
	s.u.connected.Store(true)
	defer func() {
		s.u.connected.Store(false)
		s.w.metrics.connected.Dec()
	}()
	for first := true; ctx.Err() == nil; first = false {
		st, moved, err := s.count()
		if err != nil {
			return healthy, fmt.Errorf("counting unseen messages: %w", err)
		}
		s.w.offer(s.u, s.runID, st, first)
		healthy = true
		switch {
		case ctx.Err() != nil:
		case moved:
			// The server reported a change with the count's answer,
			// possibly one the count missed: count again once it
			// settled, rather than IDLE past it.
			_ = cfg.Sleep(ctx, cfg.Settle)
		default:
			err = s.wait(ctx)
		}
		if err != nil {
			return healthy, err
		}
	}
	_ = s.cl.Logout()
	return healthy, nil
}

// endReason is why the session ended with err, a reconnect reason: the
// client reports a read that timed out as a closed connection, the
// session's connection remembers the timeout.
func (s *session) endReason(err error) string {
	reason := reconnectReason(err, s.bye.Load())
	if reason == reasonDropped && s.conn != nil && s.conn.timedOut.Load() {
		return reasonTimeout
	}
	return reason
}

// capabilities asks the capabilities again: servers announce more after
// the login (ESEARCH among them) than in their greeting.
func (s *session) capabilities() error {
	caps, err := s.cl.Capability()
	s.idleAfterCommand()
	if err != nil {
		return err
	}
	s.idle, s.esearch = caps["IDLE"], caps["ESEARCH"]
	return nil
}

// examine opens the mailbox with EXAMINE: read-only, so that watching
// neither changes flags nor takes \Recent from the user's own clients.
func (s *session) examine() error {
	st, err := s.cl.Execute(&commands.Select{Mailbox: s.u.box.Name, ReadOnly: true}, handlerFunc(s.handle))
	s.idleAfterCommand()
	if err != nil {
		return err
	}
	if st.Type != goimap.StatusRespOk {
		return statusError(st)
	}
	return nil
}

// count reads the mailbox's unseen count on the open mailbox; moved tells
// that the server reported a change of the mailbox with the answer.
//
// It asks SEARCH UNSEEN (or, when the server offers ESEARCH, SEARCH RETURN
// (COUNT) UNSEEN, which answers the count alone rather than every unseen
// message's number). It does not ask STATUS: RFC 3501 says STATUS is for
// mailboxes other than the selected one and must not be used to check the
// selected one for new messages, as some servers answer it from another
// view of the mailbox than the session's. SEARCH runs on the session's
// own view, the one the EXISTS, EXPUNGE and FETCH responses just updated,
// and the server reports pending changes with its answer.
func (s *session) count() (st mailboxState, moved bool, err error) {
	h := &searchHandler{s: s}
	var cmd goimap.Commander = &commands.Search{Criteria: &goimap.SearchCriteria{WithoutFlags: []string{goimap.SeenFlag}}}
	if s.esearch {
		cmd = esearchCount{}
	}
	res, err := s.cl.Execute(cmd, h)
	s.idleAfterCommand()
	switch {
	case err != nil:
		return st, false, err
	case res.Type != goimap.StatusRespOk:
		return st, false, statusError(res)
	case h.malformed:
		return st, false, fmt.Errorf("%w: a SEARCH answer that is not a list of numbers or a count", errProtocol)
	case !h.got:
		return st, false, fmt.Errorf("%w: no SEARCH answer", errProtocol)
	}
	return mailboxState{uidValidity: s.uidValidity, messages: s.messages, unseen: int(h.n)}, h.moved, nil
}

// wait returns when the mailbox may have changed: after an IDLE that saw
// a change (and the settle time after it), or the IDLE refresh; without
// IDLE, after the poll interval. It returns nil when ctx ends.
func (s *session) wait(ctx context.Context) error {
	cfg := &s.w.cfg
	if !s.idle {
		_ = cfg.Sleep(ctx, cfg.PollInterval)
		return nil
	}
	r := newIdleRound(s, cfg.Settle, cfg.Server.Timeout)
	refresh := time.AfterFunc(cfg.IdleRefresh, r.stop)
	stop := context.AfterFunc(ctx, r.stop)
	s.cl.Timeout = 0
	st, err := s.cl.Execute(&commands.Idle{}, r)
	s.cl.Timeout = cfg.Server.Timeout
	stop()
	refresh.Stop()
	expired := r.end()
	switch {
	case expired:
		return fmt.Errorf("idling: the server did not answer within %s: %w", cfg.Server.Timeout, os.ErrDeadlineExceeded)
	case err != nil:
		return fmt.Errorf("idling: %w", err)
	case st.Type != goimap.StatusRespOk:
		return fmt.Errorf("idling: %w", statusError(st))
	}
	return nil
}

// idleAfterCommand lifts the deadline the client set for the command
// that ended: the connection may rest until the next one (a poll). The
// client sets a new one before each command.
func (s *session) idleAfterCommand() { _ = s.conn.SetDeadline(time.Time{}) }

// handle reads a response that came while a command ran: it notes what
// it tells about the mailbox and consumes it, or leaves it to the client.
func (s *session) handle(resp goimap.Resp) error {
	return s.observe(parseUntagged(resp))
}

// observe notes what u tells about the mailbox. It returns nil when the
// response is consumed, responses.ErrUnhandled when the client should
// handle it (a BYE, which closes the connection; capabilities; ...).
func (s *session) observe(u untagged) error {
	switch u.kind {
	case untaggedExists:
		s.messages = u.n
	case untaggedExpunge:
		s.messages = max(s.messages, 1) - 1
	case untaggedUIDValidity:
		s.uidValidity = u.n
	case untaggedRecent, untaggedFetch:
	case untaggedBye:
		s.bye.Store(true)
		return responses.ErrUnhandled
	default:
		return responses.ErrUnhandled
	}
	return nil
}

// handlerFunc is a responses.Handler of a function.
type handlerFunc func(goimap.Resp) error

func (f handlerFunc) Handle(resp goimap.Resp) error { return f(resp) }

// searchHandler reads the answer to SEARCH UNSEEN or to ESEARCH's
// SEARCH RETURN (COUNT) UNSEEN.
type searchHandler struct {
	s *session
	// n is the count; got tells that an answer came, malformed that one
	// could not be read, moved that the mailbox changed meanwhile.
	n         uint32
	got       bool
	malformed bool
	moved     bool
}

func (h *searchHandler) Handle(resp goimap.Resp) error {
	u := parseUntagged(resp)
	switch u.kind {
	case untaggedSearch:
		// A server may split a long answer over several SEARCH
		// responses.
		h.n += u.n
		h.got = true
	case untaggedESearch:
		h.n = u.n
		h.got = true
	case untaggedMalformed:
		h.malformed = true
	default:
		h.moved = h.moved || u.changes()
		return h.s.observe(u)
	}
	return nil
}

// esearchCount is RFC 4731's SEARCH RETURN (COUNT) UNSEEN.
type esearchCount struct{}

func (esearchCount) Command() *goimap.Command {
	return &goimap.Command{Name: "SEARCH", Arguments: []any{
		goimap.RawString("RETURN"), []any{goimap.RawString("COUNT")}, goimap.RawString("UNSEEN"),
	}}
}
