package dovecot_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/ingest/ingesttest"
	"github.com/pushproxy/pushproxy/internal/nettest"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources/imap"
)

// TestDovecotIMAPWatcher runs ingest's IMAP watcher (IDLE, as a master
// user) against a real Dovecot without any push-notification driver: new
// mail, a read and an expunge made over another IMAP session must reach the
// MAIL stream as snapshots with the exact unseen count.
func TestDovecotIMAPWatcher(t *testing.T) {
	needDovecot(t, "Dovecot 2.3")
	masterFile := writeMasterUsers(t)
	// No push-notification driver: only the watcher reports.
	d := startDovecot(t, "", func(string) string { return countersConfig(nettest.FreeAddr(t), masterFile) })

	watcher := watcherSettings(t, d, fmt.Sprintf(`{"users":[{"tenant":%q,"user":%q}]}`, tenant, user))
	watcher.WatchLoginsPerSecond = 50
	conn := brokertest.Start(t)
	x := &ingest.Extras{IMAP: watcher}
	startIngestWith(t, conn, x)

	// The first snapshot states the empty mailbox. Changes close together
	// may come as one snapshot (Dovecot reports them in one IDLE answer, and
	// the watcher gathers a burst), so only the latest count is checked.
	waitForSnapshot(t, conn, 0)
	for i := 1; i <= 2; i++ {
		deliverTo(t, d.lmtp, user, fmt.Sprintf("From: Bob <bob@example.org>\r\nTo: <%s>\r\nSubject: %s %d\r\n\r\nHello body\r\n", user, subject, i))
	}
	waitForSnapshot(t, conn, 2)
	m := dialIMAP(t, d.imap)
	m.cmd(t, "LOGIN %s %s", user, password)
	m.cmd(t, "SELECT INBOX")
	m.cmd(t, `UID STORE 1 +FLAGS (\Seen)`)
	waitForSnapshot(t, conn, 1)
	m.cmd(t, `UID STORE 2 +FLAGS (\Deleted)`)
	m.cmd(t, "EXPUNGE")
	m.cmd(t, "LOGOUT")
	waitForSnapshot(t, conn, 0)
	if logText := d.log(); strings.Contains(logText, "Fatal") || strings.Contains(logText, "Panic") {
		t.Fatalf("Dovecot failed:\n%s", logText)
	}
}

// waitForSnapshot waits until the stream's last IMAP snapshot of the user
// carries the unseen count want.
func waitForSnapshot(t *testing.T, conn *broker.Conn, want int) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		got = got[:0]
		for _, e := range brokertest.Events(t, conn.JS) {
			if e.Source == events.SourceIMAP && e.Kind == events.KindSnapshot && e.Unread != nil && e.User == user {
				got = append(got, fmt.Sprint(*e.Unread))
			}
		}
		if len(got) > 0 && got[len(got)-1] == fmt.Sprint(want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("IMAP snapshots %v, want the last to be %d", got, want)
}

// startIngestWith runs ingest with the extras x on a loopback port.
func startIngestWith(t *testing.T, conn *broker.Conn, x *ingest.Extras) {
	t.Helper()
	reg := service.NewRegistry()
	exts, err := x.Extensions(t.Context(), conn, reg)
	if err != nil {
		t.Fatal(err)
	}
	ingesttest.Start(t, conn, ingest.DefaultConfig(), reg, exts...)
}

// watcherSettings are the settings of ingest's IMAP watcher against d: a
// master user's login (its password in a file) and the watch list
// watchList in a file, changes settled for 100 ms.
func watcherSettings(t *testing.T, d *dovecot, watchList string) *imap.Settings {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "master-password"), masterPassword+"\n")
	writeFile(t, filepath.Join(dir, "watch.json"), watchList)
	return &imap.Settings{Addr: d.imap, TLS: "none", Login: "separator", MasterUser: masterUser,
		MasterPasswordFile: filepath.Join(dir, "master-password"), MasterSeparator: "*",
		WatchUsersFile: filepath.Join(dir, "watch.json"), WatchSettle: 100 * time.Millisecond}
}
