package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHelpNamesEndpointsAndEnvironment(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, &out); code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, want := range []string{"/v1/events", "/v1/dovecot/ox", "/v1/dovecot/lua", "--native-token", "PUSHPROXY_DOVECOT_PASSWORD", "--provision"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestBadSettingsExitNonZero(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
	}{
		{"unknown flag", []string{"--bogus"}, nil, 2},
		{"bad environment value", nil, map[string]string{"PUSHPROXY_MAX_EVENTS": "many"}, 2},
		{"bad log level", []string{"--log-level", "loud"}, nil, 2},
		{"no NATS", nil, nil, 1},
		{"incomplete Dovecot credentials", []string{"--nats-embedded", "--data-dir", dir, "--provision", "--http-addr", "127.0.0.1:0", "--dovecot-user", "dovecot"}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(tt.args, func(k string) string { return tt.env[k] }, &out)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, out.String())
			}
		})
	}
}
