package imap

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/server"
	"github.com/emersion/go-sasl"

	"github.com/pushproxy/pushproxy/internal/tlstest"
)

// testBackend is an IMAP backend with a master user in Dovecot's manner:
// "user*master" with the master password logs in as user, as does
// AUTHENTICATE PLAIN with the user as authorization identity. A known
// master asking for an unknown user gets [AUTHORIZATIONFAILED], a wrong
// password [AUTHENTICATIONFAILED]. Each user has an INBOX of messages that
// are seen or not. It counts the sessions between login and the answer to
// STATUS, and can hold STATUS until released.
type testBackend struct {
	master, masterPassword string

	mu          sync.Mutex
	passwords   map[string]string
	seen        map[string][]bool
	hold        chan struct{}
	sessions    int
	maxSessions int
	logins      int
}

func newTestBackend() *testBackend {
	return &testBackend{
		master: "master", masterPassword: "master-secret",
		passwords: map[string]string{}, seen: map[string][]bool{},
	}
}

// addUser gives user a password and an INBOX of unseen messages.
func (b *testBackend) addUser(user, password string, messages int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.passwords[user] = password
	b.seen[user] = make([]bool, messages)
}

// markSeen marks the first n messages of user's INBOX seen.
func (b *testBackend) markSeen(user string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := 0; i < n && i < len(b.seen[user]); i++ {
		b.seen[user][i] = true
	}
}

// holdStatus makes STATUS wait until the returned function is called.
func (b *testBackend) holdStatus() (release func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = make(chan struct{})
	var once sync.Once
	hold := b.hold
	return func() { once.Do(func() { close(hold) }) }
}

func (b *testBackend) stats() (sessions, maxSessions, logins int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions, b.maxSessions, b.logins
}

func refusal(code goimap.StatusRespCode, info string) error {
	return &goimap.ErrStatusResp{Resp: &goimap.StatusResp{Type: goimap.StatusRespNo, Code: code, Info: info}}
}

// authenticate checks a login: authzid is the user a master acts as
// (empty for a user's own login).
func (b *testBackend) authenticate(authzid, authcid, password string) (backend.User, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	user := authcid
	if authzid != "" && authzid != authcid {
		if authcid != b.master || password != b.masterPassword {
			return nil, refusal("AUTHENTICATIONFAILED", "Authentication failed.")
		}
		if _, ok := b.passwords[authzid]; !ok {
			return nil, refusal("AUTHORIZATIONFAILED", "Authorization failed")
		}
		user = authzid
	} else if p, ok := b.passwords[authcid]; !ok || p != password {
		return nil, refusal("AUTHENTICATIONFAILED", "Authentication failed.")
	}
	b.logins++
	b.sessions++
	b.maxSessions = max(b.maxSessions, b.sessions)
	return &testUser{b: b, name: user}, nil
}

// Login is the LOGIN command: "user*master" is a master login.
func (b *testBackend) Login(_ *goimap.ConnInfo, username, password string) (backend.User, error) {
	if user, master, ok := strings.Cut(username, DefaultMasterSeparator); ok {
		return b.authenticate(user, master, password)
	}
	return b.authenticate("", username, password)
}

// saslPlain is AUTHENTICATE PLAIN with authorization identities.
func (b *testBackend) saslPlain(conn server.Conn) sasl.Server {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		user, err := b.authenticate(identity, username, password)
		if err != nil {
			return err
		}
		ctx := conn.Context()
		ctx.State = goimap.AuthenticatedState
		ctx.User = user
		return nil
	})
}

// testUser is a logged-in session; only STATUS is implemented.
type testUser struct {
	backend.User
	b    *testBackend
	name string
	once sync.Once
}

func (u *testUser) Username() string { return u.name }

// end ends the session's count, once.
func (u *testUser) end() {
	u.once.Do(func() {
		u.b.mu.Lock()
		u.b.sessions--
		u.b.mu.Unlock()
	})
}

func (u *testUser) Logout() error {
	u.end()
	return nil
}

func (u *testUser) GetMailbox(name string) (backend.Mailbox, error) {
	if !strings.EqualFold(name, "INBOX") {
		return nil, refusal("NONEXISTENT", "Mailbox doesn't exist: "+name)
	}
	return &testMailbox{u: u}, nil
}

type testMailbox struct {
	backend.Mailbox
	u *testUser
}

func (m *testMailbox) Name() string { return "INBOX" }

func (m *testMailbox) Status(items []goimap.StatusItem) (*goimap.MailboxStatus, error) {
	defer m.u.end()
	b := m.u.b
	b.mu.Lock()
	hold := b.hold
	b.mu.Unlock()
	if hold != nil {
		<-hold
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := goimap.NewMailboxStatus("INBOX", items)
	for _, seen := range b.seen[m.u.name] {
		if !seen {
			st.Unseen++
		}
	}
	return st, nil
}

// testTLS is a server certificate for 127.0.0.1 and localhost and a client
// configuration that trusts it.
func testTLS(t testing.TB) (serverTLS, clientTLS *tls.Config) {
	files := tlstest.Write(t, t.TempDir())
	cert, err := tls.LoadX509KeyPair(files.ServerCert, files.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate")
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, &tls.Config{RootCAs: roots}
}

// startServer serves be on 127.0.0.1 in the given TLS mode and returns its
// address and a client TLS configuration that trusts it. With
// offerStartTLS false, a plain server does not offer STARTTLS. configure,
// when given, adds to the server (extensions) before it serves.
func startServer(t testing.TB, be backend.Backend, mode TLSMode, offerStartTLS bool, configure ...func(*server.Server)) (string, *tls.Config) {
	serverTLS, clientTLS := testTLS(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tracked := &trackingListener{Listener: tcp, conns: map[*trackedConn]struct{}{}}
	var ln net.Listener = tracked
	s := server.New(be)
	s.ErrorLog = log.New(io.Discard, "", 0)
	if tb, ok := be.(*testBackend); ok {
		s.EnableAuth(sasl.Plain, tb.saslPlain)
	}
	for _, c := range configure {
		c(s)
	}
	switch mode {
	case TLSImplicit:
		ln = tls.NewListener(ln, serverTLS)
	case TLSStartTLS:
		if offerStartTLS {
			s.TLSConfig = serverTLS
		} else {
			s.AllowInsecureAuth = true
		}
	case TLSNone:
		s.AllowInsecureAuth = true
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		// Not s.Close: it reads each session's user while the session's
		// own goroutine may be writing it in a LOGIN (a data race in
		// go-imap v1). Closing the sockets ends every session on its own
		// goroutine instead.
		sessions := tracked.stop()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("the IMAP server did not stop")
		}
		select {
		case <-sessions:
		case <-time.After(5 * time.Second):
			t.Error("IMAP sessions did not end")
		}
	})
	return ln.Addr().String(), clientTLS
}

// trackingListener records the connections it accepts, so that a test
// server can close their sockets when it stops.
type trackingListener struct {
	net.Listener
	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	stopped bool
	wg      sync.WaitGroup
}

// Accept accepts and records a connection.
func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[tc] = struct{}{}
	l.wg.Add(1)
	return tc, nil
}

// stop closes the listener and the sockets of the connections still open,
// and returns a channel closed once the server has closed every one.
func (l *trackingListener) stop() <-chan struct{} {
	_ = l.Listener.Close()
	l.mu.Lock()
	l.stopped = true
	for c := range l.conns {
		_ = c.Conn.Close()
	}
	l.mu.Unlock()
	ended := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(ended)
	}()
	return ended
}

// trackedConn is a connection of a trackingListener; the server's Close
// of it counts as its end.
type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

// Close closes the socket and marks the connection ended.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.wg.Done()
	})
	return err
}
