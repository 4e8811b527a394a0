package broker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

// leaseTTL keeps the lease tests short: a holder that stops renewing is
// replaced within about a second and a half.
const leaseTTL = 1500 * time.Millisecond

// leaseChildEnv makes the test binary a lease holder (see TestMain): the
// value is the NATS URL it connects to.
const leaseChildEnv = "PUSHPROXY_LEASE_CHILD"

// leaseSubject is where holder processes report: "run <id>" when their
// task starts, "tick <id>" every 50ms while it runs, "stop <id>" when it
// ends.
const leaseSubject = "test.lease"

func TestMain(m *testing.M) {
	if url := os.Getenv(leaseChildEnv); url != "" {
		if err := leaseChild(url); err != nil {
			fmt.Fprintln(os.Stderr, "lease child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// leaseChild holds the lease "test" until it is stopped, reporting on
// leaseSubject.
func leaseChild(url string) error {
	ctx := context.Background()
	conn, err := broker.Connect(ctx, broker.Options{Name: "lease-child", URLs: []string{url}})
	if err != nil {
		return err
	}
	defer conn.Close()
	lease, err := broker.OpenLease(ctx, conn.JS, "test")
	if err != nil {
		return err
	}
	lease = lease.WithLog(zerolog.New(os.Stderr))
	id := lease.Holder()
	fmt.Println(id) // the parent reads who this child is
	return lease.Run(ctx, func(ctx context.Context) error {
		_ = conn.NC.Publish(leaseSubject, []byte("run "+id))
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = conn.NC.Publish(leaseSubject, []byte("stop "+id))
				_ = conn.NC.Flush()
				return nil
			case <-tick.C:
				_ = conn.NC.Publish(leaseSubject, []byte("tick "+id))
			}
		}
	})
}

func startLeaseServer(t *testing.T) *broker.Conn {
	t.Helper()
	l := broker.DefaultLayout()
	l.LeaseTTL = leaseTTL
	return brokertest.Start(t, brokertest.WithLayout(l), brokertest.WithListen())
}

// runLease runs a Lease in this process on its own connection, counting
// how many tasks run at once in running and the most seen in most.
func runLease(t *testing.T, url string, running, most *atomic.Int32, task func(context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := broker.Connect(ctx, broker.Options{Name: t.Name(), URLs: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := broker.OpenLease(ctx, conn.JS, "test")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- lease.Run(ctx, func(ctx context.Context) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			return task(ctx)
		})
	}()
	return func() error {
		cancel()
		err := <-done
		conn.Close()
		return err
	}
}

func TestLeaseOneHolderThenTheNext(t *testing.T) {
	conn := startLeaseServer(t)
	url := conn.ClientURL()
	var running, most atomic.Int32
	started := make(chan string, 4)
	task := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			started <- name
			<-ctx.Done()
			return nil
		}
	}
	stopA := runLease(t, url, &running, &most, task("a"))
	if got := <-started; got != "a" {
		t.Fatalf("first holder %q, want a", got)
	}
	stopB := runLease(t, url, &running, &most, task("b"))
	// b stands by through several renewals of a.
	select {
	case got := <-started:
		t.Fatalf("%s started while a held the lease", got)
	case <-time.After(2 * leaseTTL):
	}
	h, ok, err := broker.ReadLease(context.Background(), conn.JS, "test")
	if err != nil || !ok || h.ID == "" {
		t.Fatalf("ReadLease: %+v %v %v", h, ok, err)
	}
	if err := stopA(); err != nil {
		t.Fatalf("a: %v", err)
	}
	// a released it: b need not wait for the TTL (it polls every third).
	select {
	case got := <-started:
		if got != "b" {
			t.Fatalf("next holder %q", got)
		}
	case <-time.After(leaseTTL):
		t.Fatal("b did not take the released lease before the TTL")
	}
	if err := stopB(); err != nil {
		t.Fatalf("b: %v", err)
	}
	if m := most.Load(); m != 1 {
		t.Fatalf("%d tasks ran at once", m)
	}
	if _, ok, err := broker.ReadLease(context.Background(), conn.JS, "test"); err != nil || ok {
		t.Fatalf("lease still held after both stopped: %v %v", ok, err)
	}
}

func TestLeaseTaskErrorReleases(t *testing.T) {
	conn := startLeaseServer(t)
	ctx := context.Background()
	lease, err := broker.OpenLease(ctx, conn.JS, "test")
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := lease.Run(ctx, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Run: %v, want the task's error", err)
	}
	if _, ok, err := broker.ReadLease(ctx, conn.JS, "test"); err != nil || ok {
		t.Fatalf("lease still held after the task failed: %v %v", ok, err)
	}
}

func TestOpenLeaseNeedsTheBucket(t *testing.T) {
	conn := brokertest.Start(t)
	if err := conn.JS.DeleteKeyValue(context.Background(), broker.BucketLeases); err != nil {
		t.Fatal(err)
	}
	_, err := broker.OpenLease(context.Background(), conn.JS, "test")
	if err == nil || !strings.Contains(err.Error(), "provision the layout again") {
		t.Fatalf("OpenLease without the bucket: %v", err)
	}
}

// leaseChildProcess is a holder running as an OS process.
type leaseChildProcess struct {
	id  string
	cmd *exec.Cmd
}

func startLeaseChild(t *testing.T, url string) *leaseChildProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), leaseChildEnv+"="+url)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	id, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the child's id: %v", err)
	}
	return &leaseChildProcess{id: strings.TrimSpace(id), cmd: cmd}
}

// leaseReports collects the children's reports in order.
type leaseReports struct{ ch chan string }

func watchLease(t *testing.T, conn *broker.Conn) *leaseReports {
	t.Helper()
	r := &leaseReports{ch: make(chan string, 4096)}
	sub, err := conn.NC.Subscribe(leaseSubject, func(m *nats.Msg) { r.ch <- string(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

// until reads reports until want comes, failing after timeout; it
// returns the reports before it.
func (r *leaseReports) until(t *testing.T, want string, timeout time.Duration) []string {
	t.Helper()
	var seen []string
	deadline := time.After(timeout)
	for {
		select {
		case m := <-r.ch:
			if m == want {
				return seen
			}
			seen = append(seen, m)
		case <-deadline:
			t.Fatalf("no %q within %s; saw %d reports, last %v", want, timeout, len(seen), seen[max(len(seen)-3, 0):])
		}
	}
}

// TestLeaseHolderProcessKilledOrFrozen runs two holders as OS processes.
// SIGKILL of the holder: the other takes over once the lease expires.
// SIGSTOP of the new holder (a frozen process, as in a long pause or a
// partition): the first takes over; when the frozen one resumes it stops
// its task without taking the lease back.
func TestLeaseHolderProcessKilledOrFrozen(t *testing.T) {
	if testing.Short() {
		t.Skip("starts OS processes")
	}
	conn := startLeaseServer(t)
	url := conn.ClientURL()
	reports := watchLease(t, conn)
	a := startLeaseChild(t, url)
	reports.until(t, "run "+a.id, 10*time.Second)
	b := startLeaseChild(t, url)
	c := startLeaseChild(t, url)

	killed := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var next, standby *leaseChildProcess
	for next == nil {
		select {
		case m := <-reports.ch:
			switch m {
			case "run " + b.id:
				next, standby = b, c
			case "run " + c.id:
				next, standby = c, b
			}
		case <-time.After(10 * leaseTTL):
			t.Fatal("nobody took over from the killed holder")
		}
	}
	t.Logf("took over %s after SIGKILL (TTL %s)", time.Since(killed).Round(time.Millisecond), leaseTTL)

	if err := next.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	reports.until(t, "run "+standby.id, 10*leaseTTL)
	if err := next.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The resumed holder stops its task; from then on only standby ticks.
	// Its reports queued while frozen may still arrive before the stop.
	reports.until(t, "stop "+next.id, 10*leaseTTL)
	for range 20 {
		if m := <-reports.ch; m != "tick "+standby.id {
			t.Fatalf("after the frozen holder stopped: %q, want only ticks of %s", m, standby.id)
		}
	}
}

// TestLeaseReleaseAfterARenewalCutShort: when Run stops during a renewal,
// the renewal may be stored although Run never heard back, so the key is
// at a later revision than the one Run releases. The lease is still
// released when the key is this holder's, and left alone when another
// process took it.
func TestLeaseReleaseAfterARenewalCutShort(t *testing.T) {
	tests := []struct {
		name string
		// laterHolder is whose value the later revision stores: "" for
		// this holder's.
		laterHolder string
		released    bool
	}{
		{"the later revision is this holder's renewal", "", true},
		{"another process took the lease", "another/1/ABCDEFGH", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := startLeaseServer(t)
			ctx := context.Background()
			lease, err := broker.OpenLease(ctx, conn.JS, "test")
			if err != nil {
				t.Fatal(err)
			}
			kv, err := conn.JS.KeyValue(ctx, broker.BucketLeases)
			if err != nil {
				t.Fatal(err)
			}
			value := func(id string) []byte {
				data, _ := json.Marshal(broker.LeaseHolder{ID: id, Since: time.Now().UTC()})
				return data
			}
			rev, err := kv.Create(ctx, "test", value(lease.Holder()))
			if err != nil {
				t.Fatal(err)
			}
			later := lease.Holder()
			if tt.laterHolder != "" {
				later = tt.laterHolder
			}
			if _, err := kv.Update(ctx, "test", value(later), rev); err != nil {
				t.Fatal(err)
			}
			lease.ReleaseAt(rev)
			_, err = kv.Get(ctx, "test")
			if released := errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted); released != tt.released {
				t.Fatalf("released %v (Get: %v), want %v", released, err, tt.released)
			}
		})
	}
}
