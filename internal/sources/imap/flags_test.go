package imap

import (
	"bytes"
	"context"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/flagenv"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	passwordFile := testfs.Write(t, dir, "master", "master-secret\n")
	emptyFile := testfs.Write(t, dir, "empty", "")
	usersFile := testfs.Write(t, dir, "users.json", `{"users":[{"tenant":"example.com","user":"alice@example.com","password":"p"}]}`)
	cases := []struct {
		name    string
		args    []string
		enabled bool
		wantErr string
		check   func(t *testing.T, c *Counter)
	}{
		{name: "disabled", enabled: false, wantErr: "required"},
		{name: "master with defaults", enabled: true,
			args: []string{"--imap-addr=mail.example.com:993", "--imap-master-user=master", "--imap-master-password-file=" + passwordFile},
			check: func(t *testing.T, c *Counter) {
				if c.cfg.TLS != TLSImplicit || c.cfg.Login != LoginSeparator || c.cfg.MasterPassword != "master-secret" ||
					c.cfg.MasterSeparator != "*" || c.cfg.MaxConns != DefaultMaxConns || c.tls.ServerName != "mail.example.com" {
					t.Errorf("config %+v", c.cfg)
				}
			}},
		{name: "SASL over STARTTLS with tenants", enabled: true,
			args: []string{"--imap-addr=mail.example.com:143", "--imap-tls=starttls", "--imap-login=plain", "--imap-master-user=master",
				"--imap-master-password-file=" + passwordFile, "--imap-tenants=a.com,b.com", "--imap-max-conns=2", "--imap-master-separator=%"},
			check: func(t *testing.T, c *Counter) {
				if c.cfg.TLS != TLSStartTLS || c.cfg.Login != LoginSASLPlain || len(c.tenants) != 2 || c.cfg.MaxConns != 2 || cap(c.conns) != 2 {
					t.Errorf("config %+v", c.cfg)
				}
			}},
		{name: "users file, plain on loopback", enabled: true,
			args: []string{"--imap-addr=127.0.0.1:143", "--imap-tls=none", "--imap-users-file=" + usersFile},
			check: func(t *testing.T, c *Counter) {
				if c.cfg.Login != LoginUserPasswords || !c.cfg.InsecurePlain || c.cfg.Users.Len() != 1 {
					t.Errorf("config %+v", c.cfg)
				}
			}},
		{name: "plain to another host", enabled: true,
			args:    []string{"--imap-addr=mail.example.com:143", "--imap-tls=none", "--imap-users-file=" + usersFile},
			wantErr: "loopback"},
		{name: "bad TLS mode", enabled: true,
			args: []string{"--imap-addr=h:993", "--imap-tls=ssl", "--imap-users-file=" + usersFile}, wantErr: "TLS mode"},
		{name: "bad login", enabled: true,
			args:    []string{"--imap-addr=h:993", "--imap-login=users", "--imap-master-user=m", "--imap-master-password-file=" + passwordFile},
			wantErr: "login method"},
		{name: "both", enabled: true,
			args:    []string{"--imap-addr=h:993", "--imap-users-file=" + usersFile, "--imap-master-user=m"},
			wantErr: "not both"},
		{name: "no password file", enabled: true,
			args: []string{"--imap-addr=h:993", "--imap-master-user=m"}, wantErr: "password-file is required"},
		{name: "empty password file", enabled: true,
			args: []string{"--imap-addr=h:993", "--imap-master-user=m", "--imap-master-password-file=" + emptyFile}, wantErr: "empty"},
		{name: "missing users file", enabled: true,
			args: []string{"--imap-addr=h:993", "--imap-users-file=" + filepath.Join(dir, "nope")}, wantErr: "reading"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			s := Flags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if s.Enabled() != tc.enabled {
				t.Errorf("enabled %v", s.Enabled())
			}
			c, err := s.Counter()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestFlagsHelp(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	Flags(fs)
	var help bytes.Buffer
	flagenv.PrintDefaults(&help, fs)
	for _, name := range []string{"imap-addr", "imap-tls", "imap-master-user", "imap-master-password-file", "imap-login",
		"imap-master-separator", "imap-users-file", "imap-tenants", "imap-max-conns",
		"imap-watch-users-file", "imap-watch-max-conns", "imap-watch-settle", "imap-watch-logins-per-second"} {
		if !strings.Contains(help.String(), "--"+name+" ") {
			t.Errorf("help has no --%s:\n%s", name, help.String())
		}
	}
}

func TestWatchFlags(t *testing.T) {
	dir := t.TempDir()
	passwordFile := testfs.Write(t, dir, "master", "master-secret\n")
	watchFile := testfs.Write(t, dir, "watch.json", `{"users":[{"tenant":"example.com","user":"alice@example.com"},{"tenant":"example.com","user":"bob@example.com"}]}`)
	usersFile := testfs.Write(t, dir, "users.json", `{"users":[{"tenant":"example.com","user":"alice@example.com","password":"p"}]}`)
	badWatchFile := testfs.Write(t, dir, "bad.json", `{"users":[{"user":"alice"}]}`)
	publish := func(context.Context, []events.Event) error { return nil }
	master := []string{"--imap-addr=mail.example.com:993", "--imap-master-user=master", "--imap-master-password-file=" + passwordFile}
	cases := []struct {
		name    string
		args    []string
		enabled bool
		wantErr string
		check   func(t *testing.T, w *Watcher)
	}{
		{name: "disabled", wantErr: "--imap-watch-users-file is required"},
		{name: "master with defaults", enabled: true, args: append([]string{"--imap-watch-users-file=" + watchFile}, master...),
			check: func(t *testing.T, w *Watcher) {
				if w.Len() != 2 || w.cfg.MaxConns != DefaultWatchMaxConns || w.cfg.Settle != DefaultSettle ||
					w.cfg.LoginsPerSecond != DefaultLoginsPerSecond || w.conn.cfg.MasterPassword != "master-secret" {
					t.Errorf("config %+v", w.cfg)
				}
			}},
		{name: "settings", enabled: true, args: append([]string{"--imap-watch-users-file=" + watchFile, "--imap-watch-max-conns=2",
			"--imap-watch-settle=1s", "--imap-watch-logins-per-second=5"}, master...),
			check: func(t *testing.T, w *Watcher) {
				if w.cfg.MaxConns != 2 || w.cfg.Settle != time.Second || w.cfg.LoginsPerSecond != 5 {
					t.Errorf("config %+v", w.cfg)
				}
			}},
		{name: "the users file as the watch list", enabled: true,
			args: []string{"--imap-addr=mail.example.com:993", "--imap-users-file=" + usersFile, "--imap-watch-users-file=" + usersFile},
			check: func(t *testing.T, w *Watcher) {
				if w.Len() != 1 || w.conn.cfg.Login != LoginUserPasswords || w.users[0].login.password != "p" {
					t.Errorf("config %+v", w.cfg)
				}
			}},
		{name: "too many users", enabled: true, args: append([]string{"--imap-watch-users-file=" + watchFile, "--imap-watch-max-conns=1"}, master...),
			wantErr: "more than the 1 allowed"},
		{name: "a watched user without a password", enabled: true,
			args:    []string{"--imap-addr=mail.example.com:993", "--imap-users-file=" + usersFile, "--imap-watch-users-file=" + watchFile},
			wantErr: "not served"},
		{name: "no server", enabled: true, args: []string{"--imap-watch-users-file=" + watchFile}, wantErr: "--imap-addr is required"},
		{name: "no login", enabled: true, args: []string{"--imap-watch-users-file=" + watchFile, "--imap-addr=h:993"}, wantErr: "required"},
		{name: "bad watch list", enabled: true, args: append([]string{"--imap-watch-users-file=" + badWatchFile}, master...), wantErr: "tenant"},
		{name: "missing watch list", enabled: true, args: append([]string{"--imap-watch-users-file=" + filepath.Join(dir, "nope")}, master...), wantErr: "reading"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			s := Flags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if s.WatchEnabled() != tc.enabled {
				t.Errorf("watch enabled %v", s.WatchEnabled())
			}
			w, err := s.Watcher(publish, prometheus.NewRegistry(), zerolog.Nop())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, w)
		})
	}
}
