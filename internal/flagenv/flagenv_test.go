package flagenv

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantN   int
		wantErr string
	}{
		{name: "default", want: "d", wantN: 1},
		{name: "env", env: map[string]string{"PUSHPROXY_NATS_URL": "e"}, want: "e", wantN: 1},
		{name: "flag wins", args: []string{"--nats-url", "f"}, env: map[string]string{"PUSHPROXY_NATS_URL": "e"}, want: "f", wantN: 1},
		{name: "bad env", env: map[string]string{"PUSHPROXY_WORKERS": "many"}, want: "d", wantErr: "PUSHPROXY_WORKERS"},
		{name: "env int", env: map[string]string{"PUSHPROXY_WORKERS": "4"}, want: "d", wantN: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			url := fs.String("nats-url", "d", "NATS URL")
			n := fs.Int("workers", 1, "workers")
			err := Parse(fs, tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want mention of %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *url != tt.want || *n != tt.wantN {
				t.Fatalf("got %q %d, want %q %d", *url, *n, tt.want, tt.wantN)
			}
		})
	}
}

func TestUsageNamesEnvironment(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	fs.String("http-addr", ":8080", "address to listen on")
	SetUsage(fs, "ingest [flags]", "Receives events.")
	fs.Usage()
	for _, want := range []string{"Usage: ingest [flags]", "--http-addr", "PUSHPROXY_HTTP_ADDR", "(default :8080)"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestStringList(t *testing.T) {
	var l StringList
	_ = l.Set("a, b")
	_ = l.Set("c")
	if l.String() != "a,b,c" {
		t.Fatalf("got %q", l.String())
	}
}
