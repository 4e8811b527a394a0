package imap

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/server"
)

// idleBackend is an IMAP backend whose users' INBOX the tests change while
// a watcher IDLEs on it, with the go-imap server and idleExt. Like a real
// server it reports a change to a session only while the session IDLEs:
// a change is pushed once the session's IDLE began and before its DONE is
// answered. Logins: the user's password, or "user*master" with the master
// password ([AUTHORIZATIONFAILED] for an unknown user).
type idleBackend struct {
	master, masterPassword string

	mu    sync.Mutex
	cond  *sync.Cond
	users map[string]*idleUser
	// sessions counts logged-in sessions not yet closed; logouts the
	// LOGOUT commands; searches each user's SEARCH commands.
	sessions int
	logouts  int
	searches map[string]int
	// gate, when set, holds every login until it is closed; inLogin and
	// mostInLogin count the logins held at once.
	gate                 chan struct{}
	inLogin, mostInLogin int
	// unavailable refuses a user's next logins with [UNAVAILABLE].
	unavailable map[string]int
}

// idleUser is a user and its INBOX.
type idleUser struct {
	password    string
	uidValidity uint32
	uidNext     uint32
	seen        []bool // by sequence number - 1
	// conn is the session that last opened the INBOX.
	conn *idleConn
}

func newIdleBackend() *idleBackend {
	b := &idleBackend{master: "master", masterPassword: "master-secret", users: map[string]*idleUser{}, searches: map[string]int{}, unavailable: map[string]int{}}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// addUser gives user a password and an INBOX of messages, the first seen
// of them seen.
func (b *idleBackend) addUser(user, password string, messages, seen int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := &idleUser{password: password, uidValidity: 7, uidNext: 1}
	for i := range messages {
		u.seen = append(u.seen, i < seen)
		u.uidNext++
	}
	b.users[user] = u
}

func (b *idleBackend) Login(_ *goimap.ConnInfo, username, password string) (backend.User, error) {
	b.mu.Lock()
	gate := b.gate
	b.inLogin++
	b.mostInLogin = max(b.mostInLogin, b.inLogin)
	b.cond.Broadcast()
	b.mu.Unlock()
	if gate != nil {
		<-gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inLogin--
	if n := b.unavailable[username]; n > 0 {
		b.unavailable[username] = n - 1
		return nil, refusal("UNAVAILABLE", "Temporary authentication failure.")
	}
	name := username
	if user, master, ok := strings.Cut(username, DefaultMasterSeparator); ok {
		if master != b.master || password != b.masterPassword {
			return nil, refusal("AUTHENTICATIONFAILED", "Authentication failed.")
		}
		if _, ok := b.users[user]; !ok {
			return nil, refusal("AUTHORIZATIONFAILED", "Authorization failed")
		}
		name = user
	} else if u, ok := b.users[username]; !ok || u.password != password {
		return nil, refusal("AUTHENTICATIONFAILED", "Authentication failed.")
	}
	b.sessions++
	return &idleSession{b: b, name: name}, nil
}

// waitInLogin waits until n logins are held at the gate.
func (b *idleBackend) waitInLogin(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.inLogin < n {
		b.cond.Wait()
	}
}

// waitIdle waits until user's session IDLEs, and returns it.
func (b *idleBackend) waitIdle(t testing.TB, user string) *idleConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	stop := time.AfterFunc(10*time.Second, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop.Stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if u := b.users[user]; u != nil && u.conn != nil && u.conn.idling {
			return u.conn
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not IDLE", user)
		}
		b.cond.Wait()
	}
}

// change changes user's INBOX with f once the session IDLEs, and pushes
// the untagged response f returns within the IDLE. It returns the
// session's connection it wrote to.
func (b *idleBackend) change(t testing.TB, user string, f func(u *idleUser) string) *idleConn {
	t.Helper()
	for {
		c := b.waitIdle(t, user)
		c.pushing.Lock()
		b.mu.Lock()
		if !c.idling {
			// DONE came meanwhile: wait for the next IDLE.
			b.mu.Unlock()
			c.pushing.Unlock()
			continue
		}
		line := f(b.users[user])
		b.mu.Unlock()
		c.write(line)
		c.pushing.Unlock()
		return c
	}
}

// deliver adds n unseen messages.
func (b *idleBackend) deliver(t testing.TB, user string, n int) {
	b.change(t, user, func(u *idleUser) string {
		for range n {
			u.seen = append(u.seen, false)
			u.uidNext++
		}
		return fmt.Sprintf("* %d EXISTS\r\n", len(u.seen))
	})
}

// markSeen marks message seq seen.
func (b *idleBackend) markSeen(t testing.TB, user string, seq int) {
	b.change(t, user, func(u *idleUser) string {
		u.seen[seq-1] = true
		return fmt.Sprintf("* %d FETCH (FLAGS (\\Seen))\r\n", seq)
	})
}

// expunge removes message seq.
func (b *idleBackend) expunge(t testing.TB, user string, seq int) {
	b.change(t, user, func(u *idleUser) string {
		u.seen = append(u.seen[:seq-1], u.seen[seq:]...)
		return fmt.Sprintf("* %d EXPUNGE\r\n", seq)
	})
}

// bye says BYE to user's idling session and closes that session's
// connection: the client may have reconnected meanwhile, and its new
// session must not be closed too.
func (b *idleBackend) bye(t testing.TB, user string) {
	c := b.change(t, user, func(*idleUser) string { return "* BYE Server shutting down\r\n" })
	_ = c.Close()
}

// drop closes user's idling session without a word.
func (b *idleBackend) drop(t testing.TB, user string) {
	_ = b.waitIdle(t, user).Close()
}

// waitClosed waits until every session ended, so that closing the server
// does not race with sessions still ending.
func (b *idleBackend) waitClosed(t testing.TB) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		n := b.sessions
		b.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d IMAP sessions still open", n)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (b *idleBackend) stats() (logouts int, searches map[string]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	searches = make(map[string]int, len(b.searches))
	for k, v := range b.searches {
		searches[k] = v
	}
	return b.logouts, searches
}

// idleSession is a logged-in session.
type idleSession struct {
	backend.User
	b    *idleBackend
	name string
	once sync.Once
}

func (s *idleSession) Username() string { return s.name }

func (s *idleSession) Logout() error {
	s.once.Do(func() {
		s.b.mu.Lock()
		s.b.sessions--
		s.b.mu.Unlock()
	})
	return nil
}

func (s *idleSession) GetMailbox(name string) (backend.Mailbox, error) {
	if !strings.EqualFold(name, "INBOX") {
		return nil, refusal("NONEXISTENT", "Mailbox doesn't exist: "+name)
	}
	return &idleMailbox{s: s}, nil
}

// idleMailbox is a user's INBOX: its status and SEARCH by \Seen.
type idleMailbox struct {
	backend.Mailbox
	s *idleSession
}

func (m *idleMailbox) Name() string { return "INBOX" }

func (m *idleMailbox) Status(items []goimap.StatusItem) (*goimap.MailboxStatus, error) {
	b := m.s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.users[m.s.name]
	st := goimap.NewMailboxStatus("INBOX", items)
	st.Messages, st.UidNext, st.UidValidity = uint32(len(u.seen)), u.uidNext, u.uidValidity
	for _, seen := range u.seen {
		if !seen {
			st.Unseen++
		}
	}
	return st, nil
}

func (m *idleMailbox) SearchMessages(_ bool, c *goimap.SearchCriteria) ([]uint32, error) {
	b := m.s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []uint32
	for i, seen := range b.users[m.s.name].seen {
		if matchSeen(c, seen) {
			ids = append(ids, uint32(i+1))
		}
	}
	return ids, nil
}

// matchSeen tells whether a message with only \Seen, or no flag, matches
// criteria of flags.
func matchSeen(c *goimap.SearchCriteria, seen bool) bool {
	for _, f := range c.WithFlags {
		if f != goimap.SeenFlag || !seen {
			return false
		}
	}
	for _, f := range c.WithoutFlags {
		if f == goimap.SeenFlag && seen {
			return false
		}
	}
	return true
}

// idleExt is the server side of the tests: it wraps each connection to
// see IDLE begin and end, notes which session opened which INBOX, counts
// SEARCH and LOGOUT, and offers ESEARCH's SEARCH RETURN (COUNT) when
// esearch is set.
type idleExt struct {
	b       *idleBackend
	esearch bool
}

func (e *idleExt) Capabilities(c server.Conn) []string {
	if e.esearch && c.Context().State&goimap.AuthenticatedState != 0 {
		return []string{"ESEARCH"}
	}
	return nil
}

func (e *idleExt) Command(name string) server.HandlerFactory {
	switch name {
	case "SELECT", "EXAMINE":
		return func() server.Handler {
			h := &examineCmd{b: e.b}
			h.ReadOnly = name == "EXAMINE"
			return h
		}
	case "SEARCH":
		return func() server.Handler { return &searchCmd{b: e.b, esearch: e.esearch} }
	case "LOGOUT":
		return func() server.Handler { return &logoutCmd{b: e.b} }
	}
	return nil
}

func (e *idleExt) NewConn(c server.Conn) server.Conn { return &idleConn{Conn: c, b: e.b} }

// idleConn is a connection that tells when it IDLEs: from the server's
// continuation to the client's next line (DONE). A change holds pushing
// while it writes, so that its response reaches the client before the
// answer to DONE.
type idleConn struct {
	server.Conn
	b *idleBackend
	// idling is guarded by b.mu.
	idling  bool
	pushing sync.Mutex
}

func (c *idleConn) WriteResp(res goimap.WriterTo) error {
	err := c.Conn.WriteResp(res)
	if cont, ok := res.(*goimap.ContinuationReq); ok && cont.Info == "idling" {
		c.b.mu.Lock()
		c.idling = true
		c.b.cond.Broadcast()
		c.b.mu.Unlock()
	}
	return err
}

// Read is read only by the IDLE command, for the client's DONE.
func (c *idleConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.pushing.Lock()
	c.b.mu.Lock()
	c.idling = false
	c.b.mu.Unlock()
	c.pushing.Unlock()
	return n, err
}

// write writes an untagged response line, unless the connection ended.
func (c *idleConn) write(line string) {
	written := make(chan struct{})
	select {
	case c.Context().Responses <- rawLine{line: line, written: written}:
		<-written
	case <-c.Context().LoggedOut:
	}
}

// rawLine is a response written as it is.
type rawLine struct {
	line    string
	written chan struct{}
}

// WriteTo writes and flushes the line before it tells it written: the
// server flushes only after WriteTo returns, and a change that closes the
// connection next (bye) would otherwise close it before the line left.
func (r rawLine) WriteTo(w *goimap.Writer) error {
	defer close(r.written)
	if _, err := io.WriteString(w.Writer, r.line); err != nil {
		return err
	}
	return w.Flush()
}

// examineCmd is SELECT or EXAMINE, noting the session that opened the
// INBOX.
type examineCmd struct {
	server.Select
	b *idleBackend
}

func (h *examineCmd) Handle(conn server.Conn) error {
	err := h.Select.Handle(conn)
	if ctx := conn.Context(); ctx.Mailbox != nil {
		c, _ := conn.(*idleConn)
		h.b.mu.Lock()
		if u := h.b.users[ctx.User.Username()]; u != nil && c != nil {
			u.conn = c
		}
		h.b.mu.Unlock()
	}
	return err
}

// searchCmd is SEARCH, counted, with RETURN (COUNT) when esearch.
type searchCmd struct {
	server.Search
	b       *idleBackend
	esearch bool
	// count is set by RETURN (COUNT).
	count bool
}

func (h *searchCmd) Parse(fields []any) error {
	if len(fields) >= 2 && h.esearch {
		if s, ok := fields[0].(string); ok && strings.EqualFold(s, "RETURN") {
			h.count = true
			h.Criteria = new(goimap.SearchCriteria)
			return h.Criteria.ParseWithCharset(fields[2:], nil)
		}
	}
	return h.Search.Parse(fields)
}

func (h *searchCmd) Handle(conn server.Conn) error {
	ctx := conn.Context()
	h.b.mu.Lock()
	if ctx.User != nil {
		h.b.searches[ctx.User.Username()]++
	}
	h.b.mu.Unlock()
	if !h.count {
		return h.Search.Handle(conn)
	}
	if ctx.Mailbox == nil {
		return server.ErrNoMailboxSelected
	}
	ids, err := ctx.Mailbox.SearchMessages(false, h.Criteria)
	if err != nil {
		return err
	}
	return conn.WriteResp(goimap.NewUntaggedResp([]any{goimap.RawString("ESEARCH"), goimap.RawString("COUNT"), uint32(len(ids))}))
}

// logoutCmd is LOGOUT, counted.
type logoutCmd struct {
	server.Logout
	b *idleBackend
}

func (h *logoutCmd) Handle(conn server.Conn) error {
	h.b.mu.Lock()
	h.b.logouts++
	h.b.mu.Unlock()
	return h.Logout.Handle(conn)
}

// startIdleServer serves be with idleExt on 127.0.0.1 in mode and returns
// the server's part of a WatchConfig.
func startIdleServer(t testing.TB, be *idleBackend, mode TLSMode, esearch bool) Config {
	addr, clientTLS := startServer(t, be, mode, true, func(s *server.Server) {
		s.Enable(&idleExt{b: be, esearch: esearch})
	})
	// Runs before the server closes, after the watcher stopped.
	t.Cleanup(func() { be.waitClosed(t) })
	return Config{
		Addr: addr, TLS: mode, TLSConfig: clientTLS, InsecurePlain: mode == TLSNone,
		MasterUser: "master", MasterPassword: "master-secret", Timeout: 5 * time.Second,
	}
}
