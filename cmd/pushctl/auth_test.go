package main

import (
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/tokens"
)

var thumbprintLine = regexp.MustCompile(`(?m)^Thumbprint +: ([0-9A-F]{40})$`)

func TestAuthCertificateLifecycle(t *testing.T) {
	_, url := startNATS(t)
	dir := t.TempDir()

	r := pushctl(t, "auth", "new-certificate", "--domain", "fabrikam.com", "--out", dir, url)
	m := thumbprintLine.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stdout, "current") {
		t.Fatalf("new-certificate: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	current := m[1]
	info, err := os.Stat(filepath.Join(dir, current+".key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info, err)
	}

	cer := filepath.Join(t.TempDir(), "OAuthCert.cer")
	if r := pushctl(t, "auth", "export", "--out", cer, url); r.code != 0 {
		t.Fatalf("export: %s", r.stderr)
	}
	der, err := os.ReadFile(cer)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(der)
	if strings.ToUpper(hex.EncodeToString(sum[:])) != current {
		t.Fatal("the exported .cer is not the certificate with the printed thumbprint")
	}

	// Another folder would leave the current certificate behind: refused,
	// and nothing written.
	other := t.TempDir()
	r = pushctl(t, "auth", "new-certificate", "--domain", "fabrikam.com", "--out", other, url)
	if entries, _ := os.ReadDir(other); r.code != 2 || !strings.Contains(r.stderr, "holds the current certificate") || len(entries) != 0 {
		t.Fatalf("new-certificate into another folder: %d %q, %d files written", r.code, r.stderr, len(entries))
	}
	// Without --out the next one goes beside the current one.
	r = pushctl(t, "auth", "new-certificate", "--domain", "fabrikam.com", url)
	next := thumbprintLine.FindStringSubmatch(r.stdout)
	if r.code != 0 || next == nil || !strings.Contains(r.stdout, "next") {
		t.Fatalf("second new-certificate: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, next[1]+".key")); err != nil {
		t.Fatalf("the next certificate is not beside the current one: %v", err)
	}
	if !strings.Contains(r.stderr, "auth export --next") || !strings.Contains(r.stderr, "auth rotate") {
		t.Fatalf("the hint after a next certificate does not say --next and rotate: %q", r.stderr)
	}
	if r := pushctl(t, "probe", url); strings.Contains(r.stdout, "Authentication") {
		t.Fatalf("a next certificate broke authentication:\n%s", r.stdout)
	}
	r = pushctl(t, "auth", "show", url)
	if !strings.Contains(r.stdout, "CurrentCertificateThumbprint : "+current) || !strings.Contains(r.stdout, "NextCertificateThumbprint    : "+next[1]) {
		t.Fatalf("show:\n%s", r.stdout)
	}
	if r := pushctl(t, "auth", "rotate", url); r.code != 0 || !strings.Contains(r.stdout, next[1]) {
		t.Fatalf("rotate: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := pushctl(t, "auth", "rotate", url); r.code != 1 || !strings.Contains(r.stderr, "no next certificate") {
		t.Fatalf("rotate without next: %d %s", r.code, r.stderr)
	}
}

func TestAuthErrors(t *testing.T) {
	_, url := startNATS(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"small key", []string{"auth", "new-certificate", "--domain", "fabrikam.com", "--bits", "1024", "--out", t.TempDir(), url}, 1, "2048"},
		{"no domain", []string{"auth", "new-certificate", url}, 2, "--domain is required"},
		{"export without certificate", []string{"auth", "export", "--out", filepath.Join(t.TempDir(), "x.cer"), url}, 1, "no S2S certificate"},
		{"metadata unreachable", []string{"auth", "set-server", "--metadata-url", "http://127.0.0.1:1/metadata", url}, 1, "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oneLineError(t, pushctl(t, tt.args...), tt.code, tt.want)
		})
	}
}

func TestAuthSetServer(t *testing.T) {
	_, url := startNATS(t)
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "relay.example"})
	if err != nil {
		t.Fatal(err)
	}
	md, err := tokens.BuildMetadata(tokens.MetadataOptions{ID: "_document-id", Name: "relay", IssuerID: "relay-principal-1", Realm: "relay-realm", Certificates: []*tokens.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		writeJSONForTest(t, w, md)
	}))
	defer srv.Close()
	r := pushctl(t, "auth", "set-server", "--metadata-url", srv.URL+"/metadata/json/1", url)
	if r.code != 0 || !strings.Contains(r.stdout, "RelayPrincipal  : relay-principal-1") {
		t.Fatalf("set-server: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := pushctl(t, "auth", "show", url); !strings.Contains(r.stdout, "relay-principal-1") {
		t.Fatalf("show after set-server:\n%s", r.stdout)
	}
}

func TestAuthImport(t *testing.T) {
	_, url := startNATS(t)
	const fixtures = "../../internal/tokens/testdata/"
	// The known-answer certificate of internal/tokens.
	const thumbprint = "3DFAA45B7D7E403384E352C3E2A18103AB77AC27"
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"pem", []string{"--cert", fixtures + "s2s.pem", "--key", fixtures + "s2s.key"}, 0, "Thumbprint : " + thumbprint},
		{"pem again", []string{"--cert", fixtures + "s2s.pem", "--key", fixtures + "s2s.key"}, 1, "already exists"},
		{"cert without key", []string{"--cert", fixtures + "s2s.pem"}, 2, "either --cert and --key, or --pfx"},
		{"both forms", []string{"--cert", fixtures + "s2s.pem", "--key", fixtures + "s2s.key", "--pfx", fixtures + "s2s.p12"}, 2, "either"},
		{"wrong key", []string{"--cert", fixtures + "s2s.pem", "--key", fixtures + "contoso.key"}, 1, "key"},
		{"pfx wrong password", []string{"--pfx", fixtures + "s2s.p12", "--password", "wrong"}, 1, "password incorrect"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := pushctl(t, append(append([]string{"auth", "import", "--out", dir}, tt.args...), url)...)
			if r.code != tt.code || !strings.Contains(r.stdout+r.stderr, tt.want) {
				t.Fatalf("code %d\nstdout %s\nstderr %s\nwant %d and %q", r.code, r.stdout, r.stderr, tt.code, tt.want)
			}
		})
	}
	if r := pushctl(t, "auth", "show", url); !strings.Contains(r.stdout, "CurrentCertificateThumbprint : "+thumbprint) {
		t.Fatalf("imported certificate is not current:\n%s", r.stdout)
	}
	// Into another folder it would leave the current certificate behind.
	r := pushctl(t, "auth", "import", "--out", t.TempDir(), "--pfx", fixtures+"s2s.p12", "--password", "correct-horse", url)
	if r.code != 2 || !strings.Contains(r.stderr, "holds the current certificate") {
		t.Fatalf("pfx import into another folder: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Beside the current one it is the same certificate, already there.
	r = pushctl(t, "auth", "import", "--pfx", fixtures+"s2s.p12", "--password", "correct-horse", url)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("pfx import of the current certificate: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
