package dovecot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/nettest"
	"github.com/pushproxy/pushproxy/internal/testfs"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/sources/imap"
)

// Settings of TestDovecotIdleUsers.
const (
	// idleLoginsPerSecond is the watcher's login rate unless
	// PUSHPROXY_IDLE_LOGINS_PER_SECOND sets another.
	idleLoginsPerSecond = 500
	// idleClientsPerProcess is how many IMAP sessions one Dovecot imap
	// process serves: with Dovecot's default of one, N idle users would
	// need N imap processes (and as many inotify instances, which Linux
	// bounds per user id).
	idleClientsPerProcess = 500
	// idleSettle is how long every user stays connected and idle before
	// the memory is measured.
	idleSettle = 10 * time.Second
	// idleProbes is how many random users get a message at the end.
	idleProbes = 5
	// idleFileMargin is the file descriptors the test process needs
	// besides one per watched user (NATS, ingest, Go's runtime).
	idleFileMargin = 1024
)

// TestDovecotIdleUsers runs ingest's IMAP watcher against a real Dovecot
// serving PUSHPROXY_IDLE_USERS users, waits until every one of them is
// connected and IDLE, and reports what the test process (the watcher,
// ingest and the embedded NATS) and Dovecot hold per watched user. Then
// it delivers a message to a few random users and checks that their
// snapshots reach the stream, so that the idle connections are live.
//
// It is a measurement, not part of run.sh: run it as root with, e.g.,
//
//	PUSHPROXY_IDLE_USERS=10000 go test -count=1 -v -timeout 30m -run '^TestDovecotIdleUsers$' ./test/dovecot/
//
// PUSHPROXY_IDLE_LOGINS_PER_SECOND sets the watcher's login rate
// (idleLoginsPerSecond by default).
func TestDovecotIdleUsers(t *testing.T) {
	n, rate := idleSettings(t)
	raiseFileLimit(t, n+idleFileMargin)
	masterFile := writeMasterUsers(t)
	d := startDovecot(t, "", func(string) string { return countersConfig(nettest.FreeAddr(t), masterFile) + idleConfig(n) })

	watcher := watcherSettings(t, d, watchList(t, n))
	watcher.WatchMaxConns, watcher.WatchLoginsPerSecond = n, rate
	conn := brokertest.Start(t)
	x := &ingest.Extras{IMAP: watcher}

	before := readProcessMemory(t)
	// Cleanups run last first: the second marks when ingest starts
	// stopping (logging every user out), the first when it stopped.
	var stopping time.Time
	t.Cleanup(func() {
		if !stopping.IsZero() {
			t.Logf("ingest and its watcher stopped in %s", time.Since(stopping).Round(time.Millisecond))
		}
	})
	start := time.Now()
	startIngestWith(t, conn, x)
	t.Cleanup(func() { stopping = time.Now() })
	waitConnected(t, conn, n, rate)
	connectTime := time.Since(start)
	waitStored(t, conn, n)
	t.Logf("all %d users connected in %s (%.0f logins/s, at most %g) and their first snapshots stored; idling %s",
		n, connectTime.Round(100*time.Millisecond), float64(n)/connectTime.Seconds(), rate, idleSettle)
	time.Sleep(idleSettle)
	if _, connected := watcherStatus(t, conn); connected != n {
		t.Errorf("%d of %d users connected after idling %s", connected, n, idleSettle)
	}
	after := readProcessMemory(t)
	dm := readDovecotMemory(t, d)
	reportMemory(t, n, before, after, dm)
	if logText := d.log(); strings.Count(logText, "imap-login: Info: Login: ") != n {
		t.Logf("Dovecot logged %d logins for %d users: the watcher logged in again after failures",
			strings.Count(logText, "imap-login: Info: Login: "), n)
		for _, k := range logKinds(logText, "Disconnected: ", "Disconnected ") {
			t.Logf("Dovecot: %s", k)
		}
	}

	probeUsers(t, d, conn, n)
	if logText := d.log(); strings.Contains(logText, "Fatal") || strings.Contains(logText, "Panic") {
		t.Fatalf("Dovecot failed; the end of its log:\n%s", tail(logText, 50))
	}
	for _, k := range logKinds(d.log(), "Warning: ", "Error: ") {
		t.Logf("Dovecot: %s", k)
	}
}

// idleSettings reads the number of users (PUSHPROXY_IDLE_USERS) and the
// login rate; it skips the test without users, without root or without
// Dovecot.
func idleSettings(t *testing.T) (users int, loginsPerSecond float64) {
	v := os.Getenv("PUSHPROXY_IDLE_USERS")
	if v == "" {
		t.Skip("Dovecot idle users measurement skipped: set PUSHPROXY_IDLE_USERS to the number of users to watch")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("PUSHPROXY_IDLE_USERS=%q: want a positive number of users", v)
	}
	rate := float64(idleLoginsPerSecond)
	if v := os.Getenv("PUSHPROXY_IDLE_LOGINS_PER_SECOND"); v != "" {
		if rate, err = strconv.ParseFloat(v, 64); err != nil || rate <= 0 {
			t.Fatalf("PUSHPROXY_IDLE_LOGINS_PER_SECOND=%q: want a positive rate", v)
		}
	}
	needRootAndDovecot(t, "Dovecot idle users measurement")
	return n, rate
}

// raiseFileLimit raises the process's open file limit to at least want,
// which Dovecot, started later, inherits (Go hands its children the limit
// it started with unless the program sets one itself).
func raiseFileLimit(t *testing.T, want int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("reading the open file limit: %v", err)
	}
	lim.Cur = max(lim.Cur, uint64(want))
	lim.Max = max(lim.Max, lim.Cur)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising the open file limit to %d (one per watched user and %d more): %v", want, idleFileMargin, err)
	}
}

// idleConfig is the Dovecot configuration that lets n users IDLE at once:
// long-lived login processes, and imap processes that serve many sessions
// each (all users share one uid, which that needs), all started at once.
// Dovecot hands a logged-in connection to an imap process over a UNIX
// socket whose backlog it caps at 511: were the imap processes started one
// by one as the running ones fill up, the one accepting would fall behind
// the logins and Dovecot would refuse them ("net_connect_unix(imap)
// failed: Resource temporarily unavailable").
func idleConfig(n int) string {
	processes := (n + idleClientsPerProcess - 1) / idleClientsPerProcess
	return fmt.Sprintf(`
service imap-login {
  service_count = 0
  process_min_avail = 2
}
service imap {
  service_count = 0
  client_limit = %d
  process_min_avail = %d
  process_limit = %d
  vsz_limit = 1G
}
`, idleClientsPerProcess, processes, processes+1)
}

// idleUser is the name of the i-th watched user.
func idleUser(i int) string { return fmt.Sprintf("idle%05d@%s", i, tenant) }

// watchList is the JSON watch list of n users.
func watchList(t *testing.T, n int) string {
	list := imap.WatchList{Users: make([]imap.WatchEntry, n)}
	for i := range list.Users {
		list.Users[i] = imap.WatchEntry{Tenant: tenant, User: idleUser(i)}
	}
	data, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// watcherStatus sums the watched and connected users that every ingest
// reports.
func watcherStatus(t *testing.T, conn *broker.Conn) (watched, connected int) {
	statuses, err := ingest.GatherStatus(context.Background(), conn.NC, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range statuses {
		for _, ts := range st.IMAP {
			watched += ts.Watched
			connected += ts.Connected
		}
	}
	return watched, connected
}

// waitConnected waits until the watcher has all n users connected,
// logging the progress every few seconds. It allows four times the time
// the login rate needs, and two minutes more.
func waitConnected(t *testing.T, conn *broker.Conn, n int, loginsPerSecond float64) {
	deadline := time.Now().Add(time.Duration(4*float64(n)/loginsPerSecond*float64(time.Second)) + 2*time.Minute)
	var progress time.Time
	for {
		watched, connected := watcherStatus(t, conn)
		if connected == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d watched users connected in time", connected, watched)
		}
		if time.Since(progress) >= 5*time.Second {
			progress = time.Now()
			t.Logf("%d of %d watched users connected", connected, watched)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// mailStream opens the MAIL stream.
func mailStream(t *testing.T, conn *broker.Conn) jetstream.Stream {
	s, err := conn.JS.Stream(context.Background(), broker.StreamMail)
	if err != nil {
		t.Fatalf("opening stream %s: %v", broker.StreamMail, err)
	}
	return s
}

// streamState reads how many messages s holds and its last sequence.
func streamState(t *testing.T, s jetstream.Stream) (msgs, lastSeq uint64) {
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatalf("reading stream %s: %v", broker.StreamMail, err)
	}
	return info.State.Msgs, info.State.LastSeq
}

// waitStored waits until the MAIL stream holds at least n events (each
// user's first snapshot).
func waitStored(t *testing.T, conn *broker.Conn, n int) {
	s := mailStream(t, conn)
	deadline := time.Now().Add(time.Minute)
	for {
		msgs, _ := streamState(t, s)
		if msgs >= uint64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream holds %d events, want every user's first snapshot (%d)", msgs, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// probeUsers delivers one message to a few random users of n and waits
// until the stream holds a snapshot of one unseen message for each.
func probeUsers(t *testing.T, d *dovecot, conn *broker.Conn, n int) {
	s := mailStream(t, conn)
	_, seen := streamState(t, s)
	waiting := map[string]bool{}
	for len(waiting) < min(idleProbes, n) {
		waiting[idleUser(rand.IntN(n))] = true
	}
	start := time.Now()
	for u := range waiting {
		deliverTo(t, d.lmtp, u, fmt.Sprintf("From: Bob <bob@example.org>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nHello body\r\n", u, subject))
	}
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for len(waiting) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot of one unseen message reached the stream for %v\nDovecot log:\n%s", waiting, tail(d.log(), 50))
		}
		_, last := streamState(t, s)
		for ; seen < last; seen++ {
			m, err := s.GetMsg(ctx, seen+1)
			if err != nil {
				t.Fatalf("reading event %d: %v", seen+1, err)
			}
			e, err := events.Decode(m.Data)
			if err != nil {
				t.Fatalf("event %d: %v", seen+1, err)
			}
			if e.Source == events.SourceIMAP && e.Kind == events.KindSnapshot && e.Unread != nil && *e.Unread == 1 {
				delete(waiting, e.User)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d random users got a message; their snapshots reached the stream within %s", min(idleProbes, n), time.Since(start).Round(time.Millisecond))
}

// processMemory is the test process's memory at one time.
type processMemory struct {
	// heapAlloc is the live heap objects, heapInuse the heap spans that
	// hold them (free slots included).
	heapAlloc, heapInuse, stackInuse uint64
	// rss is the resident memory after a garbage collection, released
	// the resident memory once the free heap went back to the system.
	rss, released uint64
	goroutines    int
}

// readProcessMemory collects the garbage and reads the process's memory.
func readProcessMemory(t *testing.T) processMemory {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := processMemory{heapAlloc: ms.HeapAlloc, heapInuse: ms.HeapInuse, stackInuse: ms.StackInuse, goroutines: runtime.NumGoroutine()}
	m.rss = procKB(t, "/proc/self/status", "VmRSS") << 10
	debug.FreeOSMemory()
	m.released = procKB(t, "/proc/self/status", "VmRSS") << 10
	return m
}

// dovecotMemory is what Dovecot's master process and its children hold.
type dovecotMemory struct {
	processes, imapProcesses int
	// rss sums their resident memory (shared pages counted in each),
	// pss their proportional share of it.
	rss, pss uint64
}

// readDovecotMemory sums the memory of Dovecot's master (its pid in
// base_dir) and of its children.
func readDovecotMemory(t *testing.T, d *dovecot) dovecotMemory {
	master := strings.TrimSpace(string(testfs.Read(t, filepath.Join(d.dir, "run", "master.pid"))))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("listing processes: %v", err)
	}
	var m dovecotMemory
	for _, e := range entries {
		pid := e.Name()
		status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
		if err != nil {
			continue // not a process, or one that ended
		}
		if pid != master && procField(string(status), "PPid") != master {
			continue
		}
		rollup, err := os.ReadFile(filepath.Join("/proc", pid, "smaps_rollup"))
		if err != nil {
			continue
		}
		m.processes++
		if procField(string(status), "Name") == "imap" {
			m.imapProcesses++
		}
		m.rss += kilobytes(t, procField(string(status), "VmRSS")) << 10
		m.pss += kilobytes(t, procField(string(rollup), "Pss")) << 10
	}
	return m
}

// procKB reads a field in kB of a /proc file.
func procKB(t *testing.T, path, field string) uint64 {
	return kilobytes(t, procField(string(testfs.Read(t, path)), field))
}

// procField is the value of a "Field:  value" line of a /proc file.
func procField(text, field string) string {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// kilobytes parses a /proc "123 kB" value.
func kilobytes(t *testing.T, v string) uint64 {
	n, err := strconv.ParseUint(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		t.Fatalf("reading a /proc memory size %q: %v", v, err)
	}
	return n
}

// reportMemory logs the memory per watched user.
func reportMemory(t *testing.T, n int, before, after processMemory, dm dovecotMemory) {
	perUser := func(a, b uint64) string {
		d := float64(int64(b - a))
		return fmt.Sprintf("%+.1f MB, %.1f KB/user", d/(1<<20), d/float64(n)/(1<<10))
	}
	t.Logf("test process (watcher, ingest, embedded NATS), %d idle users:", n)
	t.Logf("  heap objects    %s", perUser(before.heapAlloc, after.heapAlloc))
	t.Logf("  heap in use     %s", perUser(before.heapInuse, after.heapInuse))
	t.Logf("  goroutine stack %s", perUser(before.stackInuse, after.stackInuse))
	t.Logf("  heap and stack  %s", perUser(before.heapInuse+before.stackInuse, after.heapInuse+after.stackInuse))
	t.Logf("  RSS after GC    %s (%.1f MB in all)", perUser(before.rss, after.rss), float64(after.rss)/(1<<20))
	t.Logf("  RSS released    %s (%.1f MB in all)", perUser(before.released, after.released), float64(after.released)/(1<<20))
	t.Logf("  goroutines      %+d, %.2f/user", after.goroutines-before.goroutines, float64(after.goroutines-before.goroutines)/float64(n))
	t.Logf("Dovecot: %d processes (%d imap), RSS %.1f MB (%.1f KB/user), PSS %.1f MB (%.1f KB/user)",
		dm.processes, dm.imapProcesses, float64(dm.rss)/(1<<20), float64(dm.rss)/float64(n)/(1<<10),
		float64(dm.pss)/(1<<20), float64(dm.pss)/float64(n)/(1<<10))
}

// logKinds sums up the lines of Dovecot's log that hold one of markers:
// how many of each kind (what follows the marker, up to a colon or a
// parenthesis after a space), with the first line of each.
func logKinds(logText string, markers ...string) []string {
	var kinds []string
	count, first := map[string]int{}, map[string]string{}
	for line := range strings.Lines(logText) {
		var msg string
		var ok bool
		for _, m := range markers {
			if _, msg, ok = strings.Cut(line, m); ok {
				break
			}
		}
		if !ok {
			continue
		}
		kind, _, _ := strings.Cut(msg, ": ")
		kind, _, _ = strings.Cut(kind, " (")
		if count[kind] == 0 {
			kinds = append(kinds, kind)
			first[kind] = strings.TrimSpace(line)
		}
		count[kind]++
	}
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = fmt.Sprintf("%d× %q, the first: %s", count[k], strings.TrimSpace(k), first[k])
	}
	return out
}

// tail is the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
