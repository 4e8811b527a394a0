// Package imap talks to any IMAP server (Dovecot, Cyrus, Stalwart,
// Courier, hosted IMAP) with the client of github.com/emersion/go-imap v1,
// in two ways:
//
//   - Counter reads the true unseen counts of mailboxes, for
//     reconciliation: for each mailbox it connects, logs in as the
//     mailbox's user, asks STATUS <mailbox> (UNSEEN) and logs out. It
//     implements sources.Counter.
//   - Watcher watches users' INBOX with IDLE (RFC 2177), one connection
//     per user, and publishes a snapshot of the exact unseen count when it
//     connects and after every change.
//
// Both log in one of three ways (Config.Login):
//
//   - LoginSeparator: a master user logs in as the user with the login
//     name "user*master" and the master password (Dovecot's
//     auth_master_user_separator; the separator is configurable);
//   - LoginSASLPlain: the master user authenticates with AUTHENTICATE
//     PLAIN and names the user as authorization identity (RFC 4616);
//   - LoginUserPasswords: each user logs in with its own password from a
//     users file (see UsersFile).
//
// A user the server clearly does not know is sources.ErrNotServed: with a
// master user, the server authenticated the master but refused to act as
// the user ([AUTHORIZATIONFAILED], which Dovecot answers for an unknown
// user when the master passdb has pass = yes); with per-user passwords, a
// user that the users file does not list. Any other failure, including a
// refused per-user login, is an error that says what was being done.
//
// The connection is secured with implicit TLS (imaps) or STARTTLS; plain
// text is allowed only to a loopback address and only when asked for
// (Config.InsecurePlain). Config.MaxConns bounds the counter's connections
// open at once to the server, across all Counts calls.
//
// # Watching
//
// Each watched user's session logs in, opens the mailbox with EXAMINE
// (read-only: it changes no flag and takes no \Recent from the user's
// clients), reads the unseen count and IDLEs. An EXISTS, EXPUNGE, FETCH or
// RECENT during IDLE starts the settle time (WatchConfig.Settle, 200 ms):
// the changes of a burst are gathered until it ends, then DONE, the count
// is read again, and IDLE again. IDLE is also ended and re-issued every
// WatchConfig.IdleRefresh (25 minutes, within RFC 2177's 29), and the
// count read again then. A server without IDLE is polled.
//
// The count is SEARCH UNSEEN on the open mailbox (SEARCH RETURN (COUNT)
// UNSEEN when the server offers ESEARCH, RFC 4731), never STATUS: RFC 3501
// reserves STATUS for mailboxes other than the selected one, and SEARCH
// answers from the session's own view, the one the untagged responses
// just updated.
//
// A snapshot is an events.KindSnapshot event of Source "imap" with the
// exact count; its change id names the state so that the same state read
// again (after a reconnect) is dropped by the stream's deduplication while
// a state that comes back after another is not (see watched.snapshot).
// WatchConfig.Publish stores the snapshots, up to MaxPublishBatch a call,
// from one goroutine; a failed call is tried again after a back-off, and
// only a newer snapshot of the same user replaces an unstored one.
//
// A session that fails (BYE, a dropped connection, a timeout, a refused
// command) is opened again after a randomised exponential back-off
// (WatchConfig.RetryMin to RetryMax); a refused login waits longer
// (LoginRetryMin to LoginRetryMax, 30 s to 10 minutes). Logins are spread
// at WatchConfig.LoginsPerSecond (50), at most WatchConfig.LoginsInFlight
// (20) at once, at start and when reconnecting, so that a restart does not
// storm the server and a slow server is not sent logins faster than it
// answers them. A login answered NO with [UNAVAILABLE], [SERVERBUG] or
// [INUSE] (RFC 5530: the server's trouble, not a refusal) gets the short
// back-off. More users than
// WatchConfig.MaxConns (10,000) is an error at start. Run logs every
// session out within WatchConfig.ShutdownTimeout once its context ends.
//
// The metrics are pushproxy_imap_watched_users, pushproxy_imap_connected_users,
// pushproxy_imap_reconnects_total{reason} and
// pushproxy_imap_events_total{outcome}.
//
// # Memory
//
// A watched user costs two goroutines (the go-imap client's reader, and
// the session, which waits in the IDLE command; the settle, refresh and
// watchdog waits are timers, not goroutines) and the client's buffers
// (bufio 4 KiB each way, a size go-imap v1 does not let one change).
// BenchmarkWatcherMemory, 1,000 idle users against the in-process go-imap
// server, measured on linux/amd64 with Go 1.26 the watcher's side at
// about 24 KB per user over plain text (14 KB heap, 10 KB goroutine
// stacks) and 29 KB per user over TLS (18 KB heap), 2 goroutines per
// user (the in-process server's side, told apart by allocating stack,
// adds about as much again). Measure with
//
//	go test -run '^$' -bench BenchmarkWatcherMemory -benchtime=1x ./internal/sources/imap/
//
// Against a real Dovecot 2.3 (test/dovecot's TestDovecotIdleUsers, run by
// hand as root with PUSHPROXY_IDLE_USERS=10000) a watched user costs more:
// 15 KB of live heap (20–22 KB of heap in use), 12 KB of goroutine stacks
// and 36–40 KB of the process's RSS, so 10,000 users take about 380–420
// MB and 20,000 goroutines, connected in about 20 s at 500 logins a
// second: well within one process. Dovecot's own side was about 290 KB
// per user with imap processes serving 500 clients each.
package imap
