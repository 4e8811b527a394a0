package imap

import (
	"sync"
	"time"

	goimap "github.com/emersion/go-imap"
)

// done ends IDLE (RFC 2177).
const done = "DONE\r\n"

// idleRound is the response handler of one IDLE command, and what ends
// it. The client's reader goroutine calls Handle; timers call stop. It
// sends DONE once the server's continuation came and a stop was asked:
// settle after the first change it sees, at the refresh, or when the
// watcher stops. It needs no goroutine of its own: DONE goes through the
// client's command loop (Replies), and the waits are timers.
//
// A watchdog closes the connection when the server does not answer in
// time: neither the continuation after IDLE nor the tagged answer after
// DONE.
type idleRound struct {
	s       *session
	settle  time.Duration
	timeout time.Duration
	replies chan []byte

	mu sync.Mutex
	// started: the continuation came; wanted: a stop was asked; sent:
	// DONE was sent; changed: the mailbox changed; ended: the command
	// returned; expired: the watchdog closed the connection.
	started, wanted, sent, changed, ended, expired bool
	settleTimer, watchdog                          *time.Timer
}

func newIdleRound(s *session, settle, timeout time.Duration) *idleRound {
	r := &idleRound{s: s, settle: settle, timeout: timeout, replies: make(chan []byte, 1)}
	r.watchdog = time.AfterFunc(timeout, r.expire)
	return r
}

// Replies carries DONE to the client's command loop, which writes it.
func (r *idleRound) Replies() <-chan []byte { return r.replies }

// Handle reads a response of the IDLE command.
func (r *idleRound) Handle(resp goimap.Resp) error {
	if _, ok := resp.(*goimap.ContinuationReq); ok {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.started {
			r.started = true
			r.watchdog.Stop()
			if r.wanted {
				r.sendDone()
			}
		}
		return nil
	}
	u := parseUntagged(resp)
	if u.changes() {
		r.mu.Lock()
		if !r.changed {
			r.changed = true
			r.settleTimer = time.AfterFunc(r.settle, r.stop)
		}
		r.mu.Unlock()
	}
	return r.s.observe(u)
}

// stop asks IDLE to end.
func (r *idleRound) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return
	}
	r.wanted = true
	if r.started && !r.sent {
		r.sendDone()
	}
}

// sendDone sends DONE and gives the server the timeout to answer it.
// r.mu is held.
func (r *idleRound) sendDone() {
	r.sent = true
	r.replies <- []byte(done)
	r.watchdog.Reset(r.timeout)
}

// expire closes the connection the server did not answer on in time.
func (r *idleRound) expire() {
	r.mu.Lock()
	expired := !r.ended
	r.expired = expired
	r.mu.Unlock()
	if expired {
		_ = r.s.conn.Close()
	}
}

// end marks the command returned, stops the timers and reports whether
// the watchdog closed the connection.
func (r *idleRound) end() (expired bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = true
	r.watchdog.Stop()
	if r.settleTimer != nil {
		r.settleTimer.Stop()
	}
	return r.expired
}
