package dovecot_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/nettest"

	"github.com/pushproxy/pushproxy/internal/sources"
	dovecotsource "github.com/pushproxy/pushproxy/internal/sources/dovecot"
	"github.com/pushproxy/pushproxy/internal/sources/imap"
)

const (
	doveadmAPIKey   = "doveadm-api-key"
	doveadmPassword = "doveadm-secret"
	masterUser      = "pushproxy-master"
	masterPassword  = "master-secret"
	tenant          = "example.com"
)

// TestDovecotCounters runs a real Dovecot with the doveadm HTTP API and a
// master user, delivers two messages, reads one over IMAP, and checks that
// both counters (doveadm with an API key and with a password; IMAP with a
// master login name and with SASL PLAIN) read one unseen message.
func TestDovecotCounters(t *testing.T) {
	needDovecot(t, "Dovecot 2.3")
	doveadmAddr := nettest.FreeAddr(t)
	masterFile := writeMasterUsers(t)
	d := startDovecot(t, "", func(string) string { return countersConfig(doveadmAddr, masterFile) })
	waitFor(t, "doveadm HTTP API", func() bool {
		c, err := net.Dial("tcp", doveadmAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	for i := 1; i <= 2; i++ {
		deliver(t, d.lmtp, fmt.Sprintf("From: Bob <bob@example.org>\r\nTo: <%s>\r\nSubject: %s %d\r\n\r\nHello body\r\n", user, subject, i))
	}
	m := dialIMAP(t, d.imap)
	m.cmd(t, "LOGIN %s %s", user, password)
	m.cmd(t, "SELECT INBOX")
	m.cmd(t, `UID STORE 1 +FLAGS (\Seen)`)
	m.cmd(t, "LOGOUT")

	inbox := sources.Mailbox{Tenant: tenant, User: user, Name: "INBOX"}
	missing := sources.Mailbox{Tenant: tenant, User: user, Name: "No such folder"}
	elsewhere := sources.Mailbox{Tenant: "other.org", User: "carol@other.org", Name: "INBOX"}
	boxes := []sources.Mailbox{inbox, missing, elsewhere}
	const want = "1, error, not served"

	counters := []struct {
		name  string
		build func() (sources.Counter, error)
	}{
		{"doveadm with an API key", func() (sources.Counter, error) {
			return dovecotsource.NewDoveadm(dovecotsource.DoveadmConfig{
				URL: "http://" + doveadmAddr, APIKey: doveadmAPIKey, Tenants: []string{tenant}})
		}},
		{"doveadm with a password", func() (sources.Counter, error) {
			return dovecotsource.NewDoveadm(dovecotsource.DoveadmConfig{
				URL: "http://" + doveadmAddr, Password: doveadmPassword, Tenants: []string{tenant}})
		}},
		{"IMAP master login name", func() (sources.Counter, error) {
			return imap.New(imap.Config{Addr: d.imap, TLS: imap.TLSNone, InsecurePlain: true, Login: imap.LoginSeparator,
				MasterUser: masterUser, MasterPassword: masterPassword, Tenants: []string{tenant}})
		}},
		{"IMAP SASL PLAIN", func() (sources.Counter, error) {
			return imap.New(imap.Config{Addr: d.imap, TLS: imap.TLSNone, InsecurePlain: true, Login: imap.LoginSASLPlain,
				MasterUser: masterUser, MasterPassword: masterPassword, Tenants: []string{tenant}})
		}},
	}
	for _, tc := range counters {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			counts := c.Counts(ctx, boxes)
			for i, count := range counts {
				t.Logf("%s/%s: %d, %v", boxes[i].User, boxes[i].Name, count.Unread, count.Err)
			}
			if got := describeCounts(counts); got != want {
				t.Fatalf("counts %s, want %s\n%v\nDovecot log:\n%s", got, want, counts, d.log())
			}
		})
	}
	if logText := d.log(); strings.Contains(logText, "Fatal") || strings.Contains(logText, "Panic") {
		t.Fatalf("Dovecot failed:\n%s", logText)
	}
}

// countersConfig is the Dovecot 2.3 configuration of the counters: the
// doveadm HTTP listener with both secrets, and a master user that must
// name an existing user (pass = yes).
func countersConfig(doveadmAddr, masterFile string) string {
	host, port, _ := net.SplitHostPort(doveadmAddr)
	return fmt.Sprintf(`auth_master_user_separator = *
doveadm_api_key = %s
doveadm_password = %s
service doveadm {
  inet_listener http {
    address = %s
    port = %s
  }
}
passdb {
  driver = passwd-file
  args = %s
  master = yes
  pass = yes
}
`, doveadmAPIKey, doveadmPassword, host, port, masterFile)
}

// writeMasterUsers writes the master user's passwd-file where Dovecot's
// auth process can read it.
func writeMasterUsers(t *testing.T) string {
	dir, err := os.MkdirTemp("", "pushproxy-dovecot-master-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "master-users")
	writeFile(t, path, fmt.Sprintf("%s:{PLAIN}%s\n", masterUser, masterPassword))
	return path
}

// describeCounts writes counts as "n", "not served" or "error".
func describeCounts(counts []sources.Count) string {
	var out []string
	for _, c := range counts {
		switch {
		case c.Err == nil:
			out = append(out, fmt.Sprint(c.Unread))
		case errors.Is(c.Err, sources.ErrNotServed):
			out = append(out, "not served")
		default:
			out = append(out, "error")
		}
	}
	return strings.Join(out, ", ")
}
