package counters

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestBuild(t *testing.T) {
	key := testfs.Write(t, t.TempDir(), "key", "secret\n")
	tests := []struct {
		args    []string
		names   string
		wantErr string
	}{
		{nil, "", ErrNone.Error()},
		{[]string{"--doveadm-url", "http://127.0.0.1:8080", "--doveadm-api-key-file", key}, "doveadm", ""},
		{[]string{"--doveadm-url", "http://127.0.0.1:8080", "--doveadm-api-key-file", key,
			"--imap-addr", "127.0.0.1:143", "--imap-tls", "none", "--imap-master-user", "m", "--imap-master-password-file", key}, "doveadm imap", ""},
		{[]string{"--doveadm-url", "http://127.0.0.1:8080"}, "", "doveadm counter"},
		{[]string{"--graph-app-tenant-id", "t"}, "", "--graph-users"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		s := Flags(fs, Shared{})
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		list, err := s.Build(zerolog.Nop(), nil)
		var names []string
		for _, c := range list {
			names = append(names, c.Name())
		}
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%v: error %v, want one naming %q", tt.args, err, tt.wantErr)
		case tt.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tt.args, err)
		case strings.Join(names, " ") != tt.names:
			t.Errorf("%v: counters %v, want %s", tt.args, names, tt.names)
		}
		if len(tt.args) == 0 && !errors.Is(err, ErrNone) {
			t.Errorf("no flags: %v, want ErrNone", err)
		}
	}
}
