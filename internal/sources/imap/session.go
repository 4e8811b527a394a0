package imap

import (
	"context"
	"errors"
	"fmt"
	"math"

	goimap "github.com/emersion/go-imap"
	"github.com/emersion/go-imap/client"
	"github.com/emersion/go-imap/commands"
	"github.com/emersion/go-imap/responses"
	"github.com/emersion/go-sasl"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// login is how one session logs in: LOGIN name password, or AUTHENTICATE
// PLAIN with authzid. master tells that name is a master user's.
type login struct {
	sasl     bool
	master   bool
	authzid  string
	name     string
	password string
}

// codeAuthorizationFailed is RFC 5530's answer when the authentication
// identity may not act as the authorization identity.
const codeAuthorizationFailed = "AUTHORIZATIONFAILED"

// readUnseen runs one session: connect, secure, log in, STATUS mailbox
// (UNSEEN), log out. When ctx ends, the connection is closed and the
// error carries ctx's error.
func (c *Counter) readUnseen(ctx context.Context, mailbox string, l login) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	cl, conn, err := c.open(ctx, l)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	n, err := status(cl, mailbox)
	if err != nil {
		return 0, failed(ctx, "asking STATUS", err)
	}
	_ = cl.Logout()
	return n, nil
}

// failed wraps err with what was being done, or with ctx's error when ctx
// ended (which closed the connection and caused err).
func failed(ctx context.Context, doing string, err error) error {
	if errors.Is(err, sources.ErrNotServed) {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", doing, ctx.Err())
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// run logs in. The server's refusal is a *loginError; with a master user,
// [AUTHORIZATIONFAILED] (the master authenticated but may not act as the
// user: Dovecot's answer for an unknown user) unwraps to
// sources.ErrNotServed.
func (l login) run(cl *client.Client) error {
	var st *goimap.StatusResp
	var err error
	if l.sasl {
		st, err = authenticatePlain(cl, l)
	} else {
		st, err = cl.Execute(&commands.Login{Username: l.name, Password: l.password}, nil)
	}
	if err != nil {
		return err
	}
	if st.Type == goimap.StatusRespOk {
		return nil
	}
	if l.master && st.Code == codeAuthorizationFailed {
		return &loginError{err: sources.ErrNotServed}
	}
	if temporary(st.Code) {
		// The server cannot log anyone in just now: not a refusal of
		// this user, so the short back-off applies.
		return statusError(st)
	}
	return &loginError{err: statusError(st)}
}

// temporary reports whether a response code (RFC 5530) says the failure
// is the server's and passes: UNAVAILABLE (a subsystem is down, Dovecot's
// "temporary authentication failure"), SERVERBUG, INUSE.
func temporary(code goimap.StatusRespCode) bool {
	switch code {
	case "UNAVAILABLE", "SERVERBUG", "INUSE":
		return true
	}
	return false
}

// loginError is the server's refusal of a login. It unwraps to
// sources.ErrNotServed when a master user may not act as the user.
type loginError struct{ err error }

func (e *loginError) Error() string { return "login refused: " + e.err.Error() }
func (e *loginError) Unwrap() error { return e.err }

// authenticatePlain runs AUTHENTICATE PLAIN, with the initial response in
// the command when the server supports SASL-IR.
func authenticatePlain(cl *client.Client, l login) (*goimap.StatusResp, error) {
	mech := sasl.NewPlainClient(l.authzid, l.name, l.password)
	name, ir, err := mech.Start()
	if err != nil {
		return nil, err
	}
	saslIR, err := cl.Support("SASL-IR")
	if err != nil {
		return nil, err
	}
	cmd := &commands.Authenticate{Mechanism: name}
	res := &responses.Authenticate{Mechanism: mech, RepliesCh: make(chan []byte, 10)}
	if saslIR {
		cmd.InitialResponse = ir
	} else {
		res.InitialResponse = ir
	}
	return cl.Execute(cmd, res)
}

// status asks STATUS mailbox (UNSEEN).
func status(cl *client.Client, mailbox string) (int, error) {
	res := &responses.Status{Mailbox: new(goimap.MailboxStatus)}
	cmd := &commands.Status{Mailbox: mailbox, Items: []goimap.StatusItem{goimap.StatusUnseen}}
	st, err := cl.Execute(cmd, res)
	if err != nil {
		return 0, err
	}
	if st.Type != goimap.StatusRespOk {
		return 0, statusError(st)
	}
	if res.Mailbox.Items == nil {
		return 0, errors.New("the server sent no STATUS answer")
	}
	if res.Mailbox.Name != goimap.CanonicalMailboxName(mailbox) {
		return 0, fmt.Errorf("the server answered the status of %q", sources.Clip(res.Mailbox.Name))
	}
	if _, ok := res.Mailbox.Items[goimap.StatusUnseen]; !ok {
		return 0, errors.New("the server's STATUS answer has no UNSEEN")
	}
	if res.Mailbox.Unseen > math.MaxInt32 {
		return 0, fmt.Errorf("the server answered UNSEEN %d, not a count", res.Mailbox.Unseen)
	}
	return int(res.Mailbox.Unseen), nil
}

// statusError is a tagged NO or BAD as an error: "server answered NO
// [CODE] text".
func statusError(st *goimap.StatusResp) error {
	return &answerError{typ: st.Type, code: st.Code, info: sources.Clip(st.Info)}
}

// answerError is a command the server refused with a tagged NO or BAD.
type answerError struct {
	typ  goimap.StatusRespType
	code goimap.StatusRespCode
	info string
}

func (e *answerError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("server answered %s [%s] %s", e.typ, e.code, e.info)
	}
	return fmt.Sprintf("server answered %s %s", e.typ, e.info)
}
