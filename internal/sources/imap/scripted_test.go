package imap

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// scriptedServer speaks just enough IMAP, line by line, for a watched
// session, and misbehaves as told: it may lack IDLE, or never answer DONE.
type scriptedServer struct {
	caps                 string
	muteDone, muteSearch bool

	mu       sync.Mutex
	searches int
	conns    sync.WaitGroup
}

func startScripted(t *testing.T, s *scriptedServer) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Go(func() { s.serve(c) })
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		s.conns.Wait()
	})
	return ln.Addr().String()
}

func (s *scriptedServer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "* OK [CAPABILITY %s] ready\r\n", s.caps)
	var idleTag string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "DONE" {
			if !s.muteDone {
				fmt.Fprintf(c, "%s OK IDLE terminated\r\n", idleTag)
			}
			continue
		}
		tag, rest, _ := strings.Cut(line, " ")
		cmd, _, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(cmd) {
		case "LOGIN":
			fmt.Fprintf(c, "%s OK Logged in\r\n", tag)
		case "CAPABILITY":
			fmt.Fprintf(c, "* CAPABILITY %s\r\n%s OK done\r\n", s.caps, tag)
		case "EXAMINE":
			fmt.Fprintf(c, "* 1 EXISTS\r\n* OK [UIDVALIDITY 9] UIDs valid\r\n%s OK [READ-ONLY] done\r\n", tag)
		case "SEARCH":
			s.mu.Lock()
			s.searches++
			s.mu.Unlock()
			if !s.muteSearch {
				fmt.Fprintf(c, "* SEARCH 1\r\n%s OK done\r\n", tag)
			}
		case "IDLE":
			idleTag = tag
			fmt.Fprint(c, "+ idling\r\n")
		case "LOGOUT":
			fmt.Fprintf(c, "* BYE bye\r\n%s OK done\r\n", tag)
			return
		default:
			fmt.Fprintf(c, "%s BAD unknown command\r\n", tag)
		}
	}
}

func (s *scriptedServer) searchCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.searches
}

func TestWatcherAgainstScriptedServers(t *testing.T) {
	cases := []struct {
		name                 string
		caps                 string
		muteDone, muteSearch bool
		cfg                  WatchConfig
		// reason, when set, is the reconnect reason expected.
		reason string
	}{
		// Polls rest longer than the command timeout: the deadline of
		// the last command must not end the connection.
		{name: "no IDLE: polls", caps: "IMAP4rev1",
			cfg: WatchConfig{PollInterval: 150 * time.Millisecond}},
		{name: "DONE unanswered: times out", caps: "IMAP4rev1 IDLE", muteDone: true,
			cfg: WatchConfig{IdleRefresh: 10 * time.Millisecond}, reason: reasonTimeout},
		{name: "SEARCH unanswered: times out", caps: "IMAP4rev1 IDLE", muteSearch: true, reason: reasonTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := &scriptedServer{caps: tc.caps, muteDone: tc.muteDone, muteSearch: tc.muteSearch}
			addr := startScripted(t, server)
			cfg := tc.cfg
			cfg.Server = Config{Addr: addr, TLS: TLSNone, InsecurePlain: true, MasterUser: "master", MasterPassword: "pw", Timeout: 50 * time.Millisecond}
			cfg.Users = []sources.Mailbox{mailboxOf("alice@example.com")}
			// Real waits, longer than the command timeout.
			cfg.Sleep = service.Sleep
			h := watch(t, cfg, 0)
			if !tc.muteSearch {
				h.sink.expect(t, "alice@example.com", 1)
			}
			if tc.reason != "" {
				waitMetric(t, h.w.metrics.reconnects.WithLabelValues(tc.reason), 1)
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for server.searchCount() < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("%d polls", server.searchCount())
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, r := range reconnectReasons() {
				if n := testutil.ToFloat64(h.w.metrics.reconnects.WithLabelValues(r)); n != 0 {
					t.Errorf("%v reconnects for %s", n, r)
				}
			}
		})
	}
}
