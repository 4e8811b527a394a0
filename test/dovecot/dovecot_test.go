// Package dovecot_test runs a real Dovecot 2.3 with deploy/dovecot's
// configuration and Lua script against ingest on an embedded JetStream:
// mail delivered over LMTP, then marked read, deleted and expunged over
// IMAP, must reach the MAIL stream with the right kinds and unseen counts.
//
// It needs root (Dovecot drops to the mail user) and Debian's dovecot-core,
// dovecot-imapd, dovecot-lmtpd and lua-socket; run.sh beside this file
// installs them and sets PUSHPROXY_DOVECOT_IT=1, without which the test is
// skipped.
package dovecot_test

import (
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/ingest/ingesttest"
	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/testfs"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
)

const (
	user     = "alice@example.com"
	password = "imap-secret"
	subject  = `café "quoted"`
)

// TestDovecotIntegration runs a real Dovecot with the shipped
// configuration in each of the three ways it documents (Lua and OX as
// shipped, Lua alone, OX alone), delivers two messages, reads one and
// deletes the other over IMAP, and checks what reached the stream.
func TestDovecotIntegration(t *testing.T) {
	needDovecot(t, "Dovecot 2.3 and lua-socket")
	lua := []string{"new INBOX 1", "new INBOX 2", "read INBOX 1", "deleted INBOX 1", "deleted INBOX 0"}
	ox := []string{"new INBOX 1", "new INBOX 2"}
	variants := []struct {
		name string
		// edit turns the shipped snippet into the variant, as the
		// snippet's comment tells an operator to.
		edit func(snippet string) string
		want map[events.Source][]string
	}{
		{"Lua and OX, as shipped", func(s string) string { return s },
			map[events.Source][]string{events.SourceDovecotLua: lua, events.SourceDovecotOX: ox}},
		{"Lua alone", func(s string) string { return dropLine(t, s, "push_notification_driver2 = ox:") },
			map[events.Source][]string{events.SourceDovecotLua: lua}},
		{"OX alone", func(s string) string {
			s = dropLine(t, s, "push_notification_driver = lua:")
			return strings.Replace(s, "push_notification_driver2 = ox:", "push_notification_driver = ox:", 1)
		}, map[events.Source][]string{events.SourceDovecotOX: ox}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			conn := brokertest.Start(t)
			ingestAddr := startIngest(t, conn)
			d := startDovecot(t, ingestAddr, v.edit)

			d.doveadm(t, "mailbox", "metadata", "set", "-u", user, "-s", "", "/private/vendor/vendor.dovecot/http-notify", "user="+user)
			for i := 1; i <= 2; i++ {
				deliver(t, d.lmtp, fmt.Sprintf("From: Bob <bob@example.org>\r\nTo: <%s>\r\nSubject: %s %d\r\n\r\nHello body\r\n", user, subject, i))
			}
			m := dialIMAP(t, d.imap)
			m.cmd(t, "LOGIN %s %s", user, password)
			m.cmd(t, "SELECT INBOX")
			m.cmd(t, `UID STORE 1 +FLAGS (\Seen)`)
			m.cmd(t, `UID STORE 2 +FLAGS (\Deleted)`)
			m.cmd(t, "EXPUNGE")
			m.cmd(t, "LOGOUT")

			var got map[events.Source][]string
			deadline := time.Now().Add(30 * time.Second)
			for {
				got = bySource(t, conn)
				if fmt.Sprint(got) == fmt.Sprint(v.want) || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if fmt.Sprint(got) != fmt.Sprint(v.want) {
				t.Fatalf("stream holds\n%v\nwant\n%v\nDovecot log:\n%s", got, v.want, d.log())
			}
			if logText := d.log(); strings.Contains(logText, "Error") || strings.Contains(logText, "Warning") {
				t.Fatalf("Dovecot logged problems:\n%s", logText)
			}
		})
	}
}

// dropLine removes the line of s that contains prefix (after its
// indentation); it fails the test when there is none, so that the shipped
// snippet and the test cannot drift apart.
func dropLine(t *testing.T, s, prefix string) string {
	t.Helper()
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return strings.Join(append(lines[:i:i], lines[i+1:]...), "\n")
		}
	}
	t.Fatalf("the shipped snippet has no line starting with %q", prefix)
	return s
}

// startIngest runs ingest on a loopback port with Dovecot credentials
// and returns its address once it is ready.
func startIngest(t *testing.T, conn *broker.Conn) string {
	cfg := ingest.DefaultConfig()
	cfg.DovecotUser, cfg.DovecotPassword = "dovecot", "ingest-secret"
	return ingesttest.Start(t, conn, cfg, nil)
}

type dovecot struct {
	dir, conf  string
	lmtp, imap string
}

// startDovecot writes a configuration around deploy/dovecot's snippet
// (changed by edit) and script into a fresh folder and starts Dovecot in
// the foreground.
func startDovecot(t *testing.T, ingestAddr string, edit func(snippet string) string) *dovecot {
	dir, err := os.MkdirTemp("", "pushproxy-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Dovecot's mail processes run as nobody and read the script and homes.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &dovecot{dir: dir, conf: filepath.Join(dir, "dovecot.conf"), lmtp: nettest.FreeAddr(t), imap: nettest.FreeAddr(t)}
	deploy := filepath.Join("..", "..", "deploy", "dovecot")
	script := filepath.Join(dir, "pushproxy.lua")
	copyFile(t, filepath.Join(deploy, "pushproxy.lua"), script)
	snippet := strings.NewReplacer(
		"CHANGE-ME", "ingest-secret",
		"127.0.0.1:8025", ingestAddr,
		"/etc/dovecot/pushproxy.lua", script,
	).Replace(string(testfs.Read(t, filepath.Join(deploy, "95-pushproxy.conf"))))
	writeFile(t, filepath.Join(dir, "95-pushproxy.conf"), edit(snippet))
	for _, sub := range []string{"run", "state", "home"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := exec.Command("chown", "nobody:nogroup", filepath.Join(dir, "home")).Run(); err != nil {
		t.Fatal(err)
	}
	lmtpHost, lmtpPort, _ := net.SplitHostPort(d.lmtp)
	imapHost, imapPort, _ := net.SplitHostPort(d.imap)
	writeFile(t, d.conf, fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:~/Maildir
service imap-login {
  inet_listener imap {
    address = %[2]s
    port = %[3]s
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = %[4]s
    port = %[5]s
  }
}
passdb {
  driver = static
  args = password=%[6]s
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=%[1]s/home/%%d/%%n
}
!include %[1]s/95-pushproxy.conf
`, dir, imapHost, imapPort, lmtpHost, lmtpPort, password))

	cmd := exec.Command("dovecot", "-F", "-c", d.conf)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting dovecot: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	waitFor(t, "dovecot", func() bool {
		c, err := net.Dial("tcp", d.lmtp)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return d
}

func (d *dovecot) doveadm(t *testing.T, args ...string) {
	out, err := exec.Command("doveadm", append([]string{"-c", d.conf}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("doveadm %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (d *dovecot) log() string {
	data, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
	return string(data)
}

// deliver sends one message to user over LMTP.
func deliver(t *testing.T, addr, message string) { deliverTo(t, addr, user, message) }

// deliverTo sends one message to rcpt over LMTP.
func deliverTo(t *testing.T, addr, rcpt, message string) {
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect := func(code int, format string, args ...any) {
		if format != "" {
			if _, err := c.Cmd(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := c.ReadResponse(code); err != nil {
			t.Fatalf("LMTP %q: %v %s", format, err, msg)
		}
	}
	expect(220, "")
	expect(250, "LHLO localhost")
	expect(250, "MAIL FROM:<bob@example.org>")
	expect(250, "RCPT TO:<%s>", rcpt)
	expect(354, "DATA")
	w := c.DotWriter()
	if _, err := w.Write([]byte(message)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	expect(250, "")
	expect(221, "QUIT")
}

// imapConn is the least IMAP client that the test needs: tagged commands
// whose untagged answers are skipped.
type imapConn struct {
	c   *textproto.Conn
	tag int
}

func dialIMAP(t *testing.T, addr string) *imapConn {
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if greeting, err := c.ReadLine(); err != nil || !strings.HasPrefix(greeting, "* OK") {
		t.Fatalf("IMAP greeting %q: %v", greeting, err)
	}
	return &imapConn{c: c}
}

func (m *imapConn) cmd(t *testing.T, format string, args ...any) {
	m.tag++
	tag := fmt.Sprintf("a%d", m.tag)
	if err := m.c.PrintfLine(tag+" "+format, args...); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := m.c.ReadLine()
		if err != nil {
			t.Fatalf("IMAP %q: %v", format, err)
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				t.Fatalf("IMAP %q: %s", format, line)
			}
			return
		}
	}
}

// bySource summarises the stream's events per source as "kind mailbox
// unread", dropping flag-only events, and fails if message content reached
// the stream.
func bySource(t *testing.T, conn *broker.Conn) map[events.Source][]string {
	out := map[events.Source][]string{}
	for _, msg := range brokertest.Messages(t, conn.JS, broker.StreamMail) {
		if strings.Contains(string(msg.Data), "quoted") || strings.Contains(string(msg.Data), "Hello body") {
			t.Fatalf("message content in the stream: %s", msg.Data)
		}
		e, err := events.Decode(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == events.KindFlags {
			continue
		}
		unread := "-"
		if e.Unread != nil {
			unread = fmt.Sprint(*e.Unread)
		}
		out[e.Source] = append(out[e.Source], fmt.Sprintf("%s %s %s", e.Kind, e.Mailbox, unread))
	}
	return out
}

func waitFor(t *testing.T, what string, ok func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start within 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeFile writes text to path, readable by Dovecot's processes that
// drop root (0644).
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	testfs.WriteFile(t, path, text, 0o644)
}

func copyFile(t *testing.T, from, to string) { writeFile(t, to, string(testfs.Read(t, from))) }

// needDovecot skips the test unless test/dovecot/run.sh set the machine up
// (PUSHPROXY_DOVECOT_IT=1, root, dovecot installed); installed names what
// the test needs installed, for the message.
func needDovecot(t *testing.T, installed string) {
	t.Helper()
	if os.Getenv("PUSHPROXY_DOVECOT_IT") != "1" {
		t.Skipf("Dovecot integration test skipped: run test/dovecot/run.sh as root (or set PUSHPROXY_DOVECOT_IT=1 with %s installed)", installed)
	}
	needRootAndDovecot(t, "Dovecot integration test")
}

// needRootAndDovecot skips the test, what in the message, unless it runs
// as root with dovecot installed.
func needRootAndDovecot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(what + " skipped: it must run as root")
	}
	if _, err := exec.LookPath("dovecot"); err != nil {
		t.Skip(what + " skipped: dovecot is not installed (test/dovecot/run.sh installs it)")
	}
}
