package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pushproxy/pushproxy/internal/benchtest"
	"github.com/pushproxy/pushproxy/internal/nettest"
)

// benchOrg is the organization pushctl standalone sets itself up for, and
// the users' domain.
const benchOrg = "example.com"

// standaloneToken is the development token pushctl standalone accepts
// without --native-token.
const standaloneToken = "standalone-dev-token"

// buildPushctl builds cmd/pushctl of this module into dir and returns the
// binary's path.
func buildPushctl(ctx context.Context, dir string) (string, error) {
	modDir, err := goOutput(ctx, "list", "-m", "-f", "{{.Dir}}")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "pushctl")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pushctl")
	cmd.Dir = modDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building pushctl: %w\n%s", err, out)
	}
	return bin, nil
}

// goOutput runs the go command and returns its trimmed output.
func goOutput(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", args...).Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// pipelineOptions say how to start the pipeline.
type pipelineOptions struct {
	bin, dataDir, logDir string
	window               time.Duration
	pprof                bool
	args                 []string
	provider             *provider
}

// process is a running process under test: pushctl standalone, or the
// raw chain (rawchain.go) it is compared with.
type process struct {
	name       string
	cmd        *exec.Cmd
	args       []string
	bin        string
	banner     string
	ingestURL  string
	natsURL    string
	pprofURL   string
	stderrPath string
	client     *http.Client
	done       chan struct{}
	exitCode   atomic.Int64
	stopOnce   sync.Once
	stopErr    error
}

// startPipeline starts pushctl standalone, waits for its banner, and
// registers the bench's APNs app with its relay. The rate limits of
// ingest (per credential) and of the relay (per organization) are off:
// the bench measures the pipeline, not the limits.
func startPipeline(ctx context.Context, o pipelineOptions) (*process, error) {
	ports, err := nettest.FreePorts(4)
	if err != nil {
		return nil, err
	}
	var addrs [4]string
	for i, p := range ports {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	ingestAddr, natsAddr, relayAddr, pprofAddr := addrs[0], addrs[1], addrs[2], addrs[3]
	args := []string{"standalone", "--data-dir", o.dataDir, "--nats-listen", natsAddr,
		"--http-addr", ingestAddr, "--relay-http-addr", relayAddr, "--log-format", "json",
		"--credential-rate", "0", "--relay-tenant-rate", "-1",
		"--relay-provider-ca-file", o.provider.caFile}
	if o.window > 0 {
		args = append(args, "--window", o.window.String())
	}
	if !o.pprof {
		pprofAddr = ""
	} else {
		args = append(args, "--debug-addr", pprofAddr)
	}
	args = append(args, o.args...)
	p, err := startProcess(ctx, processOptions{name: "pushctl standalone", bin: o.bin, args: args, logDir: o.logDir, logName: "pipeline",
		banner: "Subscribe a device", ingestAddr: ingestAddr, pprofAddr: pprofAddr})
	if err != nil {
		return nil, err
	}
	p.natsURL = "nats://" + natsAddr
	if err := p.addApp(ctx, o.provider); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// processOptions say how to start a process under test.
type processOptions struct {
	// name names it in messages.
	name string
	bin  string
	args []string
	// logDir/<logName>.stdout takes its standard output, .log its
	// standard error.
	logDir, logName string
	// banner is what it prints on its standard output once it takes work.
	banner string
	// ingestAddr is where it serves the events API and /metrics;
	// pprofAddr, where it serves Go's profiles (none when empty).
	ingestAddr, pprofAddr string
}

// startProcess starts a process as o says and waits for its banner.
func startProcess(ctx context.Context, o processOptions) (*process, error) {
	name := o.name
	stdoutPath := filepath.Join(o.logDir, o.logName+".stdout")
	stderrPath := filepath.Join(o.logDir, o.logName+".log")
	stdout, err := os.Create(stdoutPath)
	if err != nil {
		return nil, fmt.Errorf("creating the output file of %s: %w", name, err)
	}
	defer stdout.Close()
	stderr, err := os.Create(stderrPath)
	if err != nil {
		return nil, fmt.Errorf("creating the log file of %s: %w", name, err)
	}
	defer stderr.Close()
	cmd := exec.Command(o.bin, o.args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = os.Environ()
	p := &process{name: name, cmd: cmd, args: o.args, bin: o.bin, banner: o.banner, ingestURL: "http://" + o.ingestAddr,
		stderrPath: stderrPath, done: make(chan struct{}),
		client: &http.Client{Timeout: 2 * time.Minute}}
	if o.pprofAddr != "" {
		p.pprofURL = "http://" + o.pprofAddr + "/debug/pprof"
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		_ = cmd.Wait()
		p.exitCode.Store(int64(cmd.ProcessState.ExitCode()))
		close(p.done)
	}()
	if err := p.waitBanner(ctx, stdoutPath); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// waitBanner waits until the process prints its banner, which it does
// once every part takes work.
func (p *process) waitBanner(ctx context.Context, stdoutPath string) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := os.ReadFile(stdoutPath)
		if bytes.Contains(out, []byte(p.banner)) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited with %d before it was ready:\n%s", p.name, p.exitCode.Load(), tail(p.stderrPath, 20))
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", p.name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print its banner within 90s:\n%s", p.name, tail(p.stderrPath, 20))
		}
	}
}

// addApp registers the bench's APNs app, pointing at the provider, with
// the pipeline's relay (which picks registrations up at once).
func (p *process) addApp(ctx context.Context, prov *provider) error {
	out, err := exec.CommandContext(ctx, p.bin, "relay", "app", "add", "--app-id", benchTopic, "--provider", "apns",
		"--apns-key-file", prov.keyFile, "--apns-key-id", benchKeyID, "--apns-team-id", benchTeamID,
		"--apns-topic", benchTopic, "--apns-environment", "sandbox", "--apns-host", prov.url(),
		"--organization", benchOrg, "--nats-url", p.natsURL).CombinedOutput()
	if err != nil {
		return fmt.Errorf("registering the APNs app with the relay: %w\n%s", err, out)
	}
	return nil
}

// userName is the address of user u.
func userName(u int) string { return "u" + strconv.Itoa(u) + "@" + benchOrg }

// subscribe subscribes one device per user through ingest's subscriptions
// API, concurrency requests at a time, and returns how long it took.
func (p *process) subscribe(ctx context.Context, users, concurrency int) (time.Duration, error) {
	start := time.Now()
	var next atomic.Int64
	errs := make(chan error, concurrency)
	var wg sync.WaitGroup
	for range min(concurrency, 32) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				u := int(next.Add(1)) - 1
				if u >= users || ctx.Err() != nil {
					return
				}
				body := fmt.Sprintf(`{"tenant":%q,"user":%q,"appId":%q,"deviceId":%q,"platform":"APNS"}`, benchOrg, userName(u), benchTopic, benchtest.DeviceToken(u))
				status, answer, err := p.post(ctx, "/v1/subscriptions", "application/json", []byte(body))
				if err == nil && status != http.StatusCreated && status != http.StatusOK {
					err = fmt.Errorf("status %d: %s", status, answer)
				}
				if err != nil {
					errs <- fmt.Errorf("subscribing %s: %w", userName(u), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return time.Since(start), ctx.Err()
}

// post sends body to ingest with the development token and returns the
// status and the start of the answer.
func (p *process) post(ctx context.Context, path, contentType string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.ingestURL+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+standaloneToken)
	req.Header.Set("Content-Type", contentType)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode, string(answer), nil
}

// pid is the process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// cpu is the process's CPU time so far (user and system).
func (p *process) cpu() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of %s: %w", p.name, err)
	}
	return parseProcStatCPU(string(data))
}

// rss is the process's resident memory in bytes.
func (p *process) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, fmt.Errorf("reading the memory of %s: %w", p.name, err)
	}
	return parseVmRSS(string(data))
}

// rssOrZero is rss, 0 on an error.
func (p *process) rssOrZero() int64 {
	n, _ := p.rss()
	return n
}

// userHZ is the kernel's USER_HZ, the unit of /proc/<pid>/stat's times
// (100 on every Linux architecture Go runs on).
const userHZ = 100

// parseProcStatCPU returns utime+stime of a /proc/<pid>/stat line.
func parseProcStatCPU(stat string) (time.Duration, error) {
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis, where the state is field 3.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name in /proc stat")
	}
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0, errors.New("short /proc stat")
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime (14), stime (15)
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing /proc stat field %q: %w", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// parseVmRSS returns VmRSS of a /proc/<pid>/status text, in bytes.
func parseVmRSS(status string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// metrics reads the process's /metrics (served beside the events API,
// for the whole process) and returns the named series, each summed over its labels.
func (p *process) metrics(ctx context.Context, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.ingestURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the metrics of %s: %w", p.name, err)
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body, names)
}

// saveMetrics saves the process's /metrics into file.
func (p *process) saveMetrics(ctx context.Context, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.ingestURL+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("reading the metrics of %s: %w", p.name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the metrics of %s: %w", p.name, err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return fmt.Errorf("saving the metrics of %s: %w", p.name, err)
	}
	return nil
}

// parseMetrics sums the samples of each named metric in a Prometheus text
// exposition.
func parseMetrics(r io.Reader, names []string) (map[string]float64, error) {
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		want := false
		for _, n := range names {
			want = want || n == name
		}
		if !want {
			continue
		}
		if j := strings.LastIndexByte(rest, '}'); j >= 0 {
			rest = rest[j+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("parsing metric %s: %w", name, err)
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	return out, nil
}

// profile saves the pprof profile at path (e.g. "profile?seconds=20" or
// "heap?gc=1") into file; without pprof it does nothing and returns false.
func (p *process) profile(ctx context.Context, path, file string) (bool, error) {
	if p.pprofURL == "" {
		return false, nil
	}
	if err := benchtest.SaveProfile(ctx, p.client, p.pprofURL+"/"+path, file); err != nil {
		return false, err
	}
	return true, nil
}

// stop interrupts the process (it drains and exits) and waits for it,
// killing it after 60 s; it returns the exit code. Only the first call
// acts.
func (p *process) stop() (int, error) {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			p.stopErr = fmt.Errorf("interrupting pid %d: %w", p.pid(), err)
		}
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			p.stopErr = errors.Join(p.stopErr, fmt.Errorf("pid %d did not stop within 60s of SIGINT and was killed", p.pid()))
		}
	})
	return int(p.exitCode.Load()), p.stopErr
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
