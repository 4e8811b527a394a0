package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHelpAndBadFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{[]string{"--help"}, nil, 0, "PUSHPROXY_DOVEADM_URL"},
		{[]string{"--help"}, nil, 0, "--reconcile-sweep-period"},
		{[]string{"--help"}, nil, 0, "--imap-master-user"},
		{[]string{"--help"}, nil, 0, "--graph-users"},
		{[]string{"--bogus"}, nil, 2, "bogus"},
		{nil, map[string]string{"PUSHPROXY_RECONCILE_RATE": "fast"}, 2, "PUSHPROXY_RECONCILE_RATE"},
		{nil, nil, 1, "no NATS server"},
		{[]string{"--nats-embedded", "--data-dir", dir, "--nats-listen", "127.0.0.1:-1"}, nil, 1, "no mail system to read counts from"},
		{[]string{"--nats-embedded", "--data-dir", dir, "--nats-listen", "127.0.0.1:-1", "--imap-addr", "imap.example.com:993"}, nil, 1, "IMAP counter"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		code := run(tt.args, func(k string) string { return tt.env[k] }, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("reconciler %v: %d\n%s\nwant %d containing %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
	}
}
