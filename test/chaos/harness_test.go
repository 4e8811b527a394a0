package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file holds the helpers every scenario shares: building the binaries,
// running them as OS processes in their own process groups, free ports,
// waiting on conditions with deadlines, and showing logs when a test fails.

// envBin names a folder of prebuilt binaries (ingest, dispatcher, relay,
// pushctl, monitor, nats-server) to use instead of building them.
const envBin = "PUSHPROXY_CHAOS_BIN"

// binaries are the commands of the module that the harness runs.
var binaries = []string{"ingest", "dispatcher", "relay", "pushctl", "monitor"}

// natsServerPkg is the nats-server main package, a dependency of the module.
const natsServerPkg = "github.com/nats-io/nats-server/v2"

// buildOnce builds the binaries once per test binary run; its result is
// shared by the scenarios of one TestChaos through binDir.
type buildOnce struct {
	once sync.Once
	dir  string
	err  error
}

// get returns the folder holding the binaries, building them into a new
// temporary folder on the first call unless envBin names one.
func (b *buildOnce) get(ctx context.Context, tmp string) (string, error) {
	b.once.Do(func() {
		if dir := os.Getenv(envBin); dir != "" {
			b.dir, b.err = checkBinaries(dir)
			return
		}
		b.dir, b.err = buildBinaries(ctx, tmp)
	})
	return b.dir, b.err
}

// checkBinaries reports a missing binary in dir.
func checkBinaries(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%s: %w", envBin, err)
	}
	for _, name := range append(slices.Clone(binaries), "nats-server") {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("%s=%s: %w (make chaos-bin builds them)", envBin, dir, err)
		}
	}
	return dir, nil
}

// buildBinaries builds the module's commands and nats-server into dir.
func buildBinaries(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	pkgs := make([]string, 0, len(binaries))
	for _, b := range binaries {
		pkgs = append(pkgs, "./cmd/"+b)
	}
	if err := goBuild(ctx, root, append([]string{"build", "-o", dir + string(os.PathSeparator)}, pkgs...)); err != nil {
		return "", err
	}
	if err := goBuild(ctx, root, []string{"build", "-o", filepath.Join(dir, "nats-server"), natsServerPkg}); err != nil {
		return "", err
	}
	return dir, nil
}

func goBuild(ctx context.Context, root string, args []string) error {
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// goTool is the go command that runs this test, or the one on PATH.
func goTool() string {
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		if p := filepath.Join(goroot, "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// moduleRoot is the folder of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// proc is one OS process of the system under test. It can be killed and
// started again with the same command line; its output goes to a log file
// that grows across restarts.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	state   string // how the last run ended
	runs    int
	killing bool     // the harness is stopping it: do not restart
	retired bool     // the test is over: never start again
	crashes []string // runs that ended on their own
}

// restartDelay is how long after exiting on its own a process is started
// again, as systemd's Restart=on-failure with RestartSec=2s does in
// deploy/systemd.
const restartDelay = 2 * time.Second

// newProc describes a process; start runs it.
func newProc(name, bin, logDir string, args, env []string) *proc {
	return &proc{name: name, bin: bin, args: args, env: env, log: filepath.Join(logDir, name+".log")}
}

// start runs the process in a process group of its own, appending its
// stdout and stderr to its log file.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return fmt.Errorf("%s: the test is over", p.name)
	}
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("%s: already running", p.name)
	}
	p.killing = false
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.runs++
	fmt.Fprintf(f, "=== chaos: start #%d at %s: %s %s\n", p.runs, time.Now().UTC().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.state = fmt.Sprintf("%v", err)
		if err == nil {
			p.state = "exit 0"
		}
		crashed := !p.killing && !p.retired
		if crashed {
			p.crashes = append(p.crashes, fmt.Sprintf("%s exited on its own at %s (%s); restarted after %s",
				p.name, time.Now().Format(timeFmt), p.state, restartDelay))
		}
		p.mu.Unlock()
		fmt.Fprintf(f, "=== chaos: %s ended at %s: %s\n", p.name, time.Now().UTC().Format(time.RFC3339Nano), p.state)
		f.Close()
		close(done)
		if crashed {
			time.AfterFunc(restartDelay, func() { _ = p.start() })
		}
	}()
	return nil
}

// crashed returns the runs that ended without the harness stopping them.
func (p *proc) crashed() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.crashes...)
}

// retire kills the process for good: it is not restarted any more.
func (p *proc) retire() {
	p.mu.Lock()
	p.retired = true
	p.mu.Unlock()
	p.kill()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// running reports whether the process is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// signal sends sig to the process group and waits up to wait for the
// process to end; after that it kills the group. It returns when the
// process has been reaped, so nothing of it runs any more.
func (p *proc) signal(sig syscall.Signal, wait time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.killing = true
	p.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
		return
	case <-time.After(wait):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// freeze stops the process group (SIGSTOP) until thaw: it neither runs
// nor answers, and its connections stay open.
func (p *proc) freeze() { p.groupSignal(syscall.SIGSTOP) }

// thaw lets a frozen process group go on (SIGCONT).
func (p *proc) thaw() { p.groupSignal(syscall.SIGCONT) }

// groupSignal sends sig to the process group if it runs.
func (p *proc) groupSignal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

// kill sends SIGKILL to the process group and waits until it is reaped.
func (p *proc) kill() { p.signal(syscall.SIGKILL, time.Minute) }

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// grep returns the lines of the process's log that contain every one of
// words, at most max of them (the last ones).
func (p *proc) grep(max int, words ...string) []string {
	f, err := os.Open(p.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		out = append(out, line)
		if len(out) > max {
			out = out[1:]
		}
	}
	return out
}

// waitUntil calls cond every interval until it returns true, an error, or
// the deadline passes (then it returns an error naming what).
func waitUntil(ctx context.Context, what string, timeout, interval time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last: %w)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// httpReady waits until GET url answers 200 to client, each try bounded
// by 2 s. A process that exits on its own meanwhile is started again (see
// restartDelay); the error says so.
func httpReady(ctx context.Context, client *http.Client, p *proc, url string, timeout time.Duration) error {
	return waitUntil(ctx, p.name+" to be ready at "+url, timeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if !p.running() {
			return false, fmt.Errorf("%s is not running: %s", p.name, p.tail(5))
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
		}
		return true, nil
	})
}

// runTool runs a short command (pushctl) to completion and returns its
// output, appending both to logPath.
func runTool(ctx context.Context, logPath, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.CombinedOutput()
	if f, ferr := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); ferr == nil {
		fmt.Fprintf(f, "$ %s %s\n%s", filepath.Base(bin), strings.Join(args, " "), out)
		f.Close()
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// showLogsOnFailure registers a cleanup that prints the tail of every
// process's log when t failed. Register it before the processes' own
// cleanups so that it runs after they were stopped.
func showLogsOnFailure(t testing.TB, procs func() []*proc, extra ...string) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range procs() {
			t.Logf("---- %s (%s), last lines:\n%s", p.name, p.log, p.tail(40))
		}
		for _, path := range extra {
			if data, err := os.ReadFile(path); err == nil {
				t.Logf("---- %s:\n%s", path, lastLines(string(data), 40))
			}
		}
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
