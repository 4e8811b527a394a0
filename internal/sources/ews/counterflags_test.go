package ews

import (
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/ntlm"
	"github.com/pushproxy/pushproxy/internal/sources/sourcestest"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestCounterFlags(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := sourcestest.WriteAppCertificate(t, dir)
	password, empty := testfs.Write(t, dir, "password", "pa55word\n"), testfs.Write(t, dir, "empty", "\n")
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
			cs, c, ok := sourcestest.ParseCounterFlags(t, CounterFlags, tt.args, tt.err)
			if !ok {
				return
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
