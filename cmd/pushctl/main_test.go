package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

// result is what one pushctl run printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// pushctl runs a command line with an empty environment.
func pushctl(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &cli{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// oneLineError checks a failed run: the exit code, and one line on stderr
// containing want.
func oneLineError(t *testing.T, r result, code int, want string) {
	t.Helper()
	lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1
	if r.code != code || !strings.Contains(r.stderr, want) || lines != 1 {
		t.Fatalf("code %d stderr %q, want %d and one line containing %q", r.code, r.stderr, code, want)
	}
}

// startNATS starts a provisioned embedded server that pushctl can reach and
// returns the --nats-url flag for it.
func startNATS(t *testing.T) (*broker.Conn, string) {
	t.Helper()
	conn := brokertest.Start(t, brokertest.WithListen())
	return conn, "--nats-url=" + conn.ClientURL()
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{nil, 2, "Commands:"},
		{[]string{"--help"}, 0, "standalone"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"proxy"}, 2, "enable"},
		{[]string{"proxy", "enable", "--help"}, 0, "PUSHPROXY_ORGANIZATION"},
		{[]string{"proxy", "enable", "--bogus"}, 2, "pushctl proxy enable: unknown flag --bogus; see pushctl proxy enable --help\n"},
		{[]string{"standalone", "--foo"}, 2, "unknown flag --foo; see pushctl standalone --help"},
		{[]string{"--version"}, 0, "pushctl dev (commit "},
		{[]string{"version"}, 0, "nats-server "},
	}
	for _, tt := range tests {
		r := pushctl(t, tt.args...)
		if r.code != tt.code || !strings.Contains(r.stdout+r.stderr, tt.contains) || strings.Count(r.stderr, "\n") > 1 && r.code == 2 && len(tt.args) > 1 {
			t.Errorf("pushctl %v = %d\nstdout: %s\nstderr: %s\nwant %d containing %q", tt.args, r.code, r.stdout, r.stderr, tt.code, tt.contains)
		}
	}
}

func writeJSONForTest(t *testing.T, w io.Writer, v any) {
	t.Helper()
	if err := json.NewEncoder(w).Encode(v); err != nil {
		t.Error(err)
	}
}
