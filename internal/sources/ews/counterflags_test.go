package ews

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/ntlm"
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
	password, empty := filepath.Join(dir, "password"), filepath.Join(dir, "empty")
	for name, data := range map[string]string{password: "pa55word\n", empty: "\n"} {
		if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	url := []string{"--ews-url", "https://mail.fabrikam.com/EWS/Exchange.asmx"}
	oauth := append(url[:2:2], "--ews-auth", "oauth", "--ews-app-tenant-id", "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f", "--ews-client-id", "app")
	tests := []struct {
		name        string
		args        []string
		err         string // contained in Counter's error; "" when it works
		impersonate bool
		tenants     string
	}{
		{"basic", append(url, "--ews-username", "svc@fabrikam.com", "--ews-password-file", password, "--ews-count-tenants", "fabrikam.com,contoso.com"), "", false, "fabrikam.com contoso.com"},
		{"basic impersonating", append(url, "--ews-auth", "Basic", "--ews-username", "svc", "--ews-password-file", password, "--ews-impersonate"), "", true, ""},
		{"oauth with a certificate", append(oauth, "--ews-client-cert", certFile, "--ews-client-key", keyFile), "", true, ""},
		{"oauth with a secret", append(oauth, "--ews-client-secret-file", password, "--ews-authority-url", "http://127.0.0.1:1"), "", true, ""},
		{"basic without password", append(url, "--ews-username", "svc"), "--ews-password-file are required", false, ""},
		{"empty password", append(url, "--ews-username", "svc", "--ews-password-file", empty), "is empty", false, ""},
		{"oauth without credential", oauth, "a certificate or a client secret", false, ""},
		{"oauth without client id", append(url, "--ews-auth", "oauth", "--ews-app-tenant-id", "t", "--ews-client-secret-file", password), "client id is required", false, ""},
		{"ntlm", append(url, "--ews-auth", "NTLM", "--ews-username", `FABRIKAM\svc`, "--ews-password-file", password), "", false, ""},
		{"ntlm without password", append(url, "--ews-auth", "ntlm", "--ews-username", "svc"), "required with --ews-auth ntlm", false, ""},
		{"unknown scheme", append(url, "--ews-auth", "kerberos"), "none of basic, ntlm and oauth", false, ""},
		{"bad tenant", append(url, "--ews-username", "svc", "--ews-password-file", password, "--ews-count-tenants", "not a domain"), "tenant", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
			cs := CounterFlags(fs)
			if cs.CounterEnabled() {
				t.Fatal("enabled without a URL")
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
			if c.Name() != "ews" || c.soap.impersonate != tt.impersonate || strings.Join(c.tenants, " ") != tt.tenants {
				t.Fatalf("counter %+v", c)
			}
			if _, isNTLM := c.soap.client.Transport.(*ntlm.Transport); isNTLM != strings.EqualFold(cs.Auth, AuthNTLM) {
				t.Fatalf("--ews-auth %s: transport %T", cs.Auth, c.soap.client.Transport)
			}
		})
	}
}
