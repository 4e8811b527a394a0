package graph

import (
	"flag"
	"testing"

	"github.com/pushproxy/pushproxy/internal/sources/sourcestest"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestCounterFlags(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := sourcestest.WriteAppCertificate(t, dir)
	both := testfs.Write(t, dir, "both.pem", string(testfs.Read(t, certFile))+string(testfs.Read(t, keyFile)))
	secretFile, emptyFile := testfs.Write(t, dir, "secret", "s3cret~value\n"), testfs.Write(t, dir, "empty", "\n")
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
	counterFlags := func(fs *flag.FlagSet) *CounterSettings { return CounterFlags(fs, Flags(fs)) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c, ok := sourcestest.ParseCounterFlags(t, counterFlags, tt.args, tt.err)
			if !ok {
				return
			}
			if c.Name() != "graph" || c.cfg.TenantID != tenantID {
				t.Fatalf("counter %+v", c.cfg)
			}
		})
	}
}
