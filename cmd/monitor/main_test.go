package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHelpAndBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{[]string{"--help"}, nil, 0, "PUSHPROXY_ALERTMANAGER_URL"},
		{[]string{"--help"}, nil, 0, "--canary-timeout"},
		{[]string{"--bogus"}, nil, 2, "bogus"},
		{[]string{"extra"}, nil, 2, `unexpected argument "extra"`},
		{nil, map[string]string{"PUSHPROXY_PROBE_INTERVAL": "soon"}, 2, "PUSHPROXY_PROBE_INTERVAL"},
		{[]string{"--log-level", "loud"}, nil, 2, "unknown log level"},
		{nil, nil, 1, "no NATS server"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		code := run(tt.args, func(k string) string { return tt.env[k] }, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("monitor %v: %d\n%s\nwant %d containing %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
	}
}
