package imap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources"
)

var (
	alice   = sources.Mailbox{Tenant: "example.com", User: "alice@example.com", Name: "INBOX"}
	bob     = sources.Mailbox{Tenant: "example.com", User: "bob@example.com", Name: "INBOX"}
	carol   = sources.Mailbox{Tenant: "other.org", User: "carol@other.org", Name: "INBOX"}
	archive = sources.Mailbox{Tenant: "example.com", User: "alice@example.com", Name: "Archive"}
)

// describe writes a count as "n", "not served", "canceled", "timeout" or
// "error: <text>" for comparison.
func describe(c sources.Count) string {
	switch {
	case c.Err == nil:
		return fmt.Sprint(c.Unread)
	case c.Err == sources.ErrNotServed:
		return "not served"
	case errors.Is(c.Err, context.Canceled):
		return "canceled"
	case errors.Is(c.Err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "error"
	}
}

func describeAll(counts []sources.Count) string {
	var out []string
	for _, c := range counts {
		out = append(out, describe(c))
	}
	return strings.Join(out, ", ")
}

func TestCounts(t *testing.T) {
	users := func(t *testing.T, entries ...UserPassword) *Users {
		u, err := NewUsers(entries)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	cases := []struct {
		name          string
		mode          TLSMode
		offerStartTLS bool
		cfg           func(t *testing.T) Config
		boxes         []sources.Mailbox
		want          string
		wantLogins    int
	}{
		{name: "master separator over implicit TLS", mode: TLSImplicit,
			cfg: func(*testing.T) Config {
				return Config{Login: LoginSeparator, MasterUser: "master", MasterPassword: "master-secret", Tenants: []string{"Example.com"}}
			},
			boxes: []sources.Mailbox{alice, bob, carol, archive}, want: "2, not served, not served, error", wantLogins: 2},
		{name: "SASL PLAIN authorization identity over STARTTLS", mode: TLSStartTLS, offerStartTLS: true,
			cfg: func(*testing.T) Config {
				return Config{Login: LoginSASLPlain, MasterUser: "master", MasterPassword: "master-secret"}
			},
			boxes: []sources.Mailbox{alice, bob, carol}, want: "2, not served, 1", wantLogins: 2},
		{name: "wrong master password is an error, not an unknown user", mode: TLSImplicit,
			cfg: func(*testing.T) Config {
				return Config{Login: LoginSeparator, MasterUser: "master", MasterPassword: "wrong"}
			},
			boxes: []sources.Mailbox{alice, bob}, want: "error, error"},
		{name: "wrong SASL master password", mode: TLSImplicit,
			cfg: func(*testing.T) Config {
				return Config{Login: LoginSASLPlain, MasterUser: "master", MasterPassword: "wrong"}
			},
			boxes: []sources.Mailbox{bob}, want: "error"},
		{name: "per-user passwords", mode: TLSImplicit,
			cfg: func(t *testing.T) Config {
				return Config{Login: LoginUserPasswords, Users: users(t,
					UserPassword{Tenant: "example.com", User: "alice@example.com", Password: "alice-secret"},
					UserPassword{User: "carol@other.org", Password: "wrong"})}
			},
			boxes: []sources.Mailbox{alice, bob, carol}, want: "2, not served, error", wantLogins: 1},
		{name: "plain text on loopback when allowed", mode: TLSNone,
			cfg: func(*testing.T) Config {
				return Config{TLS: TLSNone, InsecurePlain: true, MasterUser: "master", MasterPassword: "master-secret"}
			},
			boxes: []sources.Mailbox{alice}, want: "2", wantLogins: 1},
		{name: "STARTTLS not offered", mode: TLSStartTLS,
			cfg: func(*testing.T) Config {
				return Config{MasterUser: "master", MasterPassword: "master-secret"}
			},
			boxes: []sources.Mailbox{alice}, want: "error"},
		{name: "a user with the separator in its name", mode: TLSImplicit,
			cfg: func(*testing.T) Config {
				return Config{MasterUser: "master", MasterPassword: "master-secret"}
			},
			boxes: []sources.Mailbox{{Tenant: "example.com", User: "a*b", Name: "INBOX"}, {Tenant: "example.com", Name: "INBOX"}},
			want:  "error, error"},
		{name: "no mailboxes", mode: TLSImplicit,
			cfg: func(*testing.T) Config {
				return Config{MasterUser: "master", MasterPassword: "master-secret"}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := newTestBackend()
			be.addUser("alice@example.com", "alice-secret", 3)
			be.markSeen("alice@example.com", 1)
			be.addUser("carol@other.org", "carol-secret", 1)
			addr, clientTLS := startServer(t, be, tc.mode, tc.offerStartTLS)
			cfg := tc.cfg(t)
			cfg.Addr, cfg.TLSConfig = addr, clientTLS
			if cfg.TLS == "" {
				cfg.TLS = tc.mode
			}
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			counts := c.Counts(context.Background(), tc.boxes)
			if got := describeAll(counts); got != tc.want {
				t.Errorf("counts %s, want %s\n%v", got, tc.want, counts)
			}
			if _, _, logins := be.stats(); logins != tc.wantLogins {
				t.Errorf("%d logins, want %d", logins, tc.wantLogins)
			}
		})
	}
}

func TestCountsFollowSeenMessages(t *testing.T) {
	be := newTestBackend()
	be.addUser("alice@example.com", "alice-secret", 2)
	addr, clientTLS := startServer(t, be, TLSImplicit, false)
	c, err := New(Config{Addr: addr, TLSConfig: clientTLS, MasterUser: "master", MasterPassword: "master-secret"})
	if err != nil {
		t.Fatal(err)
	}
	for seen, want := range []string{"2", "1", "0"} {
		be.markSeen("alice@example.com", seen)
		if got := describeAll(c.Counts(context.Background(), []sources.Mailbox{alice})); got != want {
			t.Errorf("after %d seen: %s, want %s", seen, got, want)
		}
	}
}

func TestCountsBoundConnections(t *testing.T) {
	const maxConns, users, callers = 3, 12, 2
	be := newTestBackend()
	var boxes []sources.Mailbox
	for i := range users {
		user := fmt.Sprintf("u%d@example.com", i)
		be.addUser(user, "pw", i)
		boxes = append(boxes, sources.Mailbox{Tenant: "example.com", User: user, Name: "INBOX"})
	}
	addr, clientTLS := startServer(t, be, TLSImplicit, false)
	c, err := New(Config{Addr: addr, TLSConfig: clientTLS, MasterUser: "master", MasterPassword: "master-secret", MaxConns: maxConns})
	if err != nil {
		t.Fatal(err)
	}
	release := be.holdStatus()
	defer release()
	// Let the sessions pile up against the bound before releasing them.
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if sessions, _, _ := be.stats(); sessions >= maxConns {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		release()
	}()
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			counts := c.Counts(context.Background(), boxes)
			for i, count := range counts {
				if count.Err != nil || count.Unread != i {
					t.Errorf("mailbox %d: %+v, want %d", i, count, i)
				}
			}
		})
	}
	wg.Wait()
	_, maxSessions, logins := be.stats()
	if maxSessions != maxConns {
		t.Errorf("at most %d sessions at once, want %d", maxSessions, maxConns)
	}
	if logins != users*callers {
		t.Errorf("%d logins, want %d", logins, users*callers)
	}
}

func TestCountsCanceled(t *testing.T) {
	cases := []struct {
		name string
		// run cancels or times out ctx when the server holds the
		// sessions.
		ctx       func(held <-chan struct{}) (context.Context, context.CancelFunc)
		timeout   time.Duration
		want      string
		wantLogin bool
	}{
		{name: "canceled before", ctx: func(<-chan struct{}) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, want: "canceled, canceled"},
		{name: "canceled during STATUS", ctx: func(held <-chan struct{}) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-held
				cancel()
			}()
			return ctx, cancel
		}, want: "canceled, canceled", wantLogin: true},
		{name: "session timeout", ctx: func(<-chan struct{}) (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, timeout: 200 * time.Millisecond, want: "timeout, timeout", wantLogin: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := newTestBackend()
			be.addUser("alice@example.com", "pw", 1)
			be.addUser("bob@example.com", "pw", 1)
			release := be.holdStatus()
			defer release()
			addr, clientTLS := startServer(t, be, TLSImplicit, false)
			c, err := New(Config{Addr: addr, TLSConfig: clientTLS, MasterUser: "master", MasterPassword: "master-secret", Timeout: tc.timeout})
			if err != nil {
				t.Fatal(err)
			}
			held := make(chan struct{})
			go func() {
				for {
					if sessions, _, _ := be.stats(); sessions == 2 {
						close(held)
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
			ctx, cancel := tc.ctx(held)
			defer cancel()
			start := time.Now()
			got := describeAll(c.Counts(ctx, []sources.Mailbox{alice, bob}))
			if got != tc.want {
				t.Errorf("counts %s, want %s", got, tc.want)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Counts took %v after the end of ctx", elapsed)
			}
			if _, _, logins := be.stats(); (logins > 0) != tc.wantLogin {
				t.Errorf("%d logins", logins)
			}
		})
	}
}

func TestMasterLoginName(t *testing.T) {
	cases := []struct {
		user, separator, master string
		want                    string
		wantErr                 bool
	}{
		{"alice@example.com", "*", "master", "alice@example.com*master", false},
		{"alice@example.com", "%", "admin", "alice@example.com%admin", false},
		{"al*ce", "*", "master", "", true},
	}
	for _, tc := range cases {
		got, err := masterLoginName(tc.user, tc.separator, tc.master)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("masterLoginName(%q, %q, %q) = %q, %v; want %q, error %v", tc.user, tc.separator, tc.master, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	master := func(c Config) Config {
		c.MasterUser, c.MasterPassword = "master", "pw"
		return c
	}
	users, err := NewUsers([]UserPassword{{User: "a", Password: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"plain text without asking", master(Config{Addr: "127.0.0.1:143", TLS: TLSNone}), "plain text"},
		{"plain text to another host", master(Config{Addr: "192.0.2.1:143", TLS: TLSNone, InsecurePlain: true}), "loopback"},
		{"plain text to a host name", master(Config{Addr: "mail.example.com:143", TLS: TLSNone, InsecurePlain: true}), "loopback"},
		{"no port", master(Config{Addr: "mail.example.com"}), "host:port"},
		{"unknown TLS mode", master(Config{Addr: "h:993", TLS: "ssl"}), "TLS mode"},
		{"no master password", Config{Addr: "h:993", MasterUser: "m"}, "master user"},
		{"master and users", master(Config{Addr: "h:993", Users: users}), "not both"},
		{"users without users", Config{Addr: "h:993", Login: LoginUserPasswords}, "needs the users"},
		{"users and master", master(Config{Addr: "h:993", Login: LoginUserPasswords, Users: users}), "not both"},
		{"unknown login", master(Config{Addr: "h:993", Login: "kerberos"}), "login method"},
		{"master with separator", Config{Addr: "h:993", MasterUser: "m*x", MasterPassword: "pw"}, "separator"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one about %q", err, tc.wantErr)
			}
		})
	}
	for _, addr := range []string{"127.0.0.1:143", "localhost:143", "[::1]:143"} {
		c, err := New(master(Config{Addr: addr, TLS: TLSNone, InsecurePlain: true}))
		if err != nil || c.Name() != "imap" {
			t.Errorf("%s: %v", addr, err)
		}
	}
}
