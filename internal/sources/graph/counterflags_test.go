package graph

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/tokens"
)

func TestCounterFlags(t *testing.T) {
	dir := t.TempDir()
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "pushproxy.test"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "app.pem"), filepath.Join(dir, "app.key")
	if err := cert.WritePEM(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	both := filepath.Join(dir, "both.pem")
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	secretFile, emptyFile := filepath.Join(dir, "secret"), filepath.Join(dir, "empty")
	for name, data := range map[string][]byte{both: append(certPEM, keyPEM...), secretFile: []byte("s3cret~value\n"), emptyFile: []byte("\n")} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	app := []string{"--graph-users", "testdata/directory.json", "--graph-app-tenant-id", tenantID, "--graph-client-id", clientID}
	tests := []struct {
		name string
		args []string
		err  string // contained in Counter's error; "" when it works
	}{
		{"certificate and key", append(app, "--graph-client-cert", certFile, "--graph-client-key", keyFile), ""},
		{"key in the certificate's file", append(app, "--graph-client-cert", both), ""},
		{"secret", append(app, "--graph-client-secret-file", secretFile, "--graph-api-url", "http://127.0.0.1:1/v1.0", "--graph-authority-url", "http://127.0.0.1:1"), ""},
		{"certificate and secret", append(app, "--graph-client-cert", both, "--graph-client-secret-file", secretFile), "not both"},
		{"no credential", app, "a certificate or a client secret"},
		{"key without certificate", append(app, "--graph-client-key", keyFile), "without its certificate"},
		{"certificate without key", append(app, "--graph-client-cert", certFile), "PRIVATE KEY"},
		{"empty secret", append(app, "--graph-client-secret-file", emptyFile), "is empty"},
		{"no directory", []string{"--graph-app-tenant-id", tenantID, "--graph-client-id", clientID, "--graph-client-secret-file", secretFile}, "--graph-users is required"},
		{"no client id", []string{"--graph-users", "testdata/directory.json", "--graph-app-tenant-id", tenantID, "--graph-client-secret-file", secretFile}, "client id is required"},
		{"bad API URL", append(app, "--graph-client-secret-file", secretFile, "--graph-api-url", "graph"), "not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
			cs := CounterFlags(fs, Flags(fs))
			if cs.CounterEnabled() {
				t.Fatal("enabled without an app")
			}
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if !cs.CounterEnabled() {
				t.Fatal("not enabled")
			}
			c, err := cs.Counter()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Name() != "graph" || c.cfg.TenantID != tenantID {
				t.Fatalf("counter %+v", c.cfg)
			}
		})
	}
}
