package daemon

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/broker"
)

func TestMain_ExitCodes(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		run  error
		code int
		say  string
		out  string
	}{
		{name: "help", args: []string{"--help"}, code: 0, say: "PUSHPROXY_NATS_URL"},
		{name: "bad flag", args: []string{"--nope"}, code: 2, say: "demo: unknown flag --nope; see demo --help\n"},
		{name: "version", args: []string{"--version"}, code: 0, out: "demo dev (commit "},
		{name: "extra argument", args: []string{"extra"}, code: 2, say: `unexpected argument "extra"`},
		{name: "bad log level", args: []string{"--log-level", "loud"}, code: 2, say: "log level"},
		{name: "profiles on a public address", args: []string{"--debug-addr", "0.0.0.0:6060"}, code: 2, say: "demo: --debug-addr: the debug address \"0.0.0.0:6060\" is not a loopback address"},
		{name: "no NATS", args: nil, code: 1, say: "connecting to NATS"},
		{name: "runs embedded and provisions", args: []string{"--nats-embedded", "--provision", "--log-format", "json"}, code: 0, say: "demo stopped"},
		{name: "run fails", args: []string{"--nats-embedded", "--log-format", "json"}, run: boom, code: 1, say: "boom"},
		{name: "env", env: map[string]string{"PUSHPROXY_NATS_EMBEDDED": "true", "PUSHPROXY_PROVISION": "1"}, code: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			c := New("demo", "demo [flags]", "A demo daemon.", &stderr, Options{Provision: true, Stdout: &stdout})
			c.NATS().StoreDir = t.TempDir()
			code := c.Main(context.Background(), tt.args, func(k string) string { return tt.env[k] }, func(ctx context.Context, env Env) error {
				if tt.run != nil {
					return tt.run
				}
				return broker.Ready(ctx, env.Conn.JS)
			})
			if code != tt.code || !strings.Contains(stderr.String(), tt.say) || !strings.Contains(stdout.String(), tt.out) {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant %d, %q and %q", code, stdout.String(), stderr.String(), tt.code, tt.out, tt.say)
			}
			if tt.name == "bad flag" && strings.Count(stderr.String(), "\n") != 1 {
				t.Fatalf("a bad flag printed more than one line:\n%s", stderr.String())
			}
		})
	}
}
