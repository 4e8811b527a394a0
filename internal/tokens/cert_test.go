package tokens

import (
	"bytes"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Known answers for testdata/s2s.pem, computed with openssl, not with this
// package (see testdata/README.md):
//
//	openssl x509 -in testdata/s2s.pem -noout -fingerprint -sha1
//	openssl x509 -in testdata/s2s.pem -outform der | openssl dgst -sha1 -binary | basenc --base64url
//	openssl x509 -in testdata/s2s.pem -noout -ext subjectKeyIdentifier
const (
	s2sThumbprint = "3DFAA45B7D7E403384E352C3E2A18103AB77AC27"
	s2sX5T        = "PfqkW31-QDOE41LD4qGBA6t3rCc"
	s2sSKI        = "1220E3EFE9746015C05527C1E9F5D8A94FBFBF18"
)

func TestKnownAnswers(t *testing.T) {
	c := loadTestCert(t, "s2s")
	if got := c.Thumbprint(); got != s2sThumbprint {
		t.Errorf("Thumbprint() = %s, want %s", got, s2sThumbprint)
	}
	if got := c.X5T(); got != s2sX5T {
		t.Errorf("X5T() = %s, want %s", got, s2sX5T)
	}
	// openssl derives the subject key id by RFC 5280 method 1, as we do.
	if got := strings.ToUpper(hex.EncodeToString(subjectKeyID(&c.Key.PublicKey))); got != s2sSKI {
		t.Errorf("subjectKeyID = %s, want openssl's %s", got, s2sSKI)
	}
}

func TestNewCertificate(t *testing.T) {
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	c, err := NewCertificate(CertificateOptions{Domain: "fabrikam.com", Validity: 2 * 365 * 24 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	x := c.X509
	checks := []struct {
		name string
		ok   bool
	}{
		{"subject CN=fabrikam.com", x.Subject.String() == "CN=fabrikam.com"},
		{"self-signed", x.CheckSignature(x.SignatureAlgorithm, x.RawTBSCertificate, x.Signature) == nil && bytes.Equal(x.RawIssuer, x.RawSubject)},
		{"2048-bit key", c.Key.N.BitLen() == 2048},
		{"certificate holds the key", c.Key.PublicKey.Equal(x.PublicKey)},
		{"subject key id set", bytes.Equal(x.SubjectKeyId, subjectKeyID(&c.Key.PublicKey))},
		{"friendly name default", c.FriendlyName == DefaultFriendlyName},
		{"NotBefore slightly in the past", x.NotBefore.Before(now) && now.Sub(x.NotBefore) <= time.Hour},
		{"NotAfter = now + validity", x.NotAfter.Equal(now.Add(2 * 365 * 24 * time.Hour))},
		{"positive serial", x.SerialNumber.Sign() > 0},
		{"not a CA", x.BasicConstraintsValid && !x.IsCA},
		{"thumbprint is 40 upper-case hex", len(c.Thumbprint()) == 40 && strings.ToUpper(c.Thumbprint()) == c.Thumbprint()},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("new certificate: %s: not so", ch.name)
		}
	}

	// Check our files and fingerprint with openssl, which knows nothing of
	// this package.
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed: skipping the interoperability check")
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "s2s.pem"), filepath.Join(dir, "s2s.key")
	if err := c.WritePEM(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	_, fp, _ := strings.Cut(strings.TrimSpace(run("x509", "-in", certPath, "-noout", "-fingerprint", "-sha1")), "=")
	if strings.ReplaceAll(fp, ":", "") != c.Thumbprint() {
		t.Errorf("openssl fingerprint %s, Thumbprint() %s", fp, c.Thumbprint())
	}
	if certPub, keyPub := run("x509", "-in", certPath, "-noout", "-pubkey"), run("pkey", "-in", keyPath, "-pubout"); certPub != keyPub {
		t.Errorf("openssl: key file does not match certificate")
	}
	run("pkey", "-in", keyPath, "-check", "-noout")
}

func TestNewCertificateRefuses(t *testing.T) {
	tests := []struct {
		name string
		opts CertificateOptions
		is   error
	}{
		{"1024-bit key", CertificateOptions{Domain: "fabrikam.com", Bits: 1024}, ErrKeyTooSmall},
		{"2047-bit key", CertificateOptions{Domain: "fabrikam.com", Bits: 2047}, ErrKeyTooSmall},
		{"huge key", CertificateOptions{Domain: "fabrikam.com", Bits: 65536}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCertificate(tt.opts)
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("NewCertificate: %v, want %v", err, tt.is)
			}
		})
	}
}

// TestSelfSignRefuses covers the option checks after key generation with a
// fixed key, so no key is generated.
func TestSelfSignRefuses(t *testing.T) {
	key := loadTestCert(t, "s2s").Key
	tests := []struct {
		name string
		opts CertificateOptions
	}{
		{"no domain", CertificateOptions{Domain: "  "}},
		{"negative validity", CertificateOptions{Domain: "fabrikam.com", Validity: -time.Hour}},
		{"broken randomness", CertificateOptions{Domain: "fabrikam.com", Rand: errReader{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := selfSign(key, tt.opts); err == nil {
				t.Fatal("selfSign succeeded")
			}
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestLoad(t *testing.T) {
	td := func(name string) string { return filepath.Join("testdata", name) }
	combined := filepath.Join(t.TempDir(), "combined.pem")
	writeConcat(t, combined, td("s2s.key"), td("s2s.pem"))

	tests := []struct {
		name    string
		load    func() (*Certificate, error)
		wantKey bool
		is      error // nil: success expected
	}{
		{"PEM with PKCS #8 key", func() (*Certificate, error) { return LoadPEM(td("s2s.pem"), td("s2s.key")) }, true, nil},
		{"PEM with PKCS #1 key", func() (*Certificate, error) { return LoadPEM(td("s2s.pem"), td("s2s-pkcs1.key")) }, true, nil},
		{"PEM, key and certificate in one file", func() (*Certificate, error) { return LoadPEM(combined, combined) }, true, nil},
		{"PEM, public only", func() (*Certificate, error) { return LoadPEM(td("s2s.pem"), "") }, false, nil},
		{"PKCS #12", func() (*Certificate, error) { return LoadPKCS12(td("s2s.p12"), "correct-horse") }, true, nil},
		{"DER .cer", func() (*Certificate, error) { return LoadPublicDER(td("s2s.cer")) }, false, nil},
		{"PEM .cer", func() (*Certificate, error) { return LoadPublicDER(td("s2s.pem")) }, false, nil},
		{"key of another certificate", func() (*Certificate, error) { return LoadPEM(td("s2s.pem"), td("contoso.key")) }, false, ErrKeyMismatch},
		{"1024-bit certificate", func() (*Certificate, error) { return LoadPublicDER(td("weak.pem")) }, false, ErrKeyTooSmall},
		{"EC certificate", func() (*Certificate, error) { return LoadPublicDER(td("ec.pem")) }, false, ErrNotRSA},
		{"PKCS #12, wrong password", func() (*Certificate, error) { return LoadPKCS12(td("s2s.p12"), "wrong") }, false, errAny},
		{"key file is not PEM", func() (*Certificate, error) { return LoadPEM(td("s2s.pem"), td("s2s.cer")) }, false, errAny},
		{"certificate file is a key", func() (*Certificate, error) { return LoadPEM(td("s2s.key"), "") }, false, errAny},
		{"missing file", func() (*Certificate, error) { return LoadPublicDER(td("missing.cer")) }, false, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.load()
			if tt.is != nil {
				if err == nil || (tt.is != errAny && !errors.Is(err, tt.is)) {
					t.Fatalf("err = %v, want %v", err, tt.is)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Thumbprint() != s2sThumbprint {
				t.Errorf("Thumbprint() = %s, want %s", c.Thumbprint(), s2sThumbprint)
			}
			if (c.Key != nil) != tt.wantKey {
				t.Errorf("has key = %v, want %v", c.Key != nil, tt.wantKey)
			}
		})
	}
}

// errAny in a test table means "any error".
var errAny = errors.New("any error")

func writeConcat(t *testing.T, dst string, srcs ...string) {
	t.Helper()
	var buf bytes.Buffer
	for _, s := range srcs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestWriteAndExport(t *testing.T) {
	c := loadTestCert(t, "s2s")
	dir := t.TempDir()
	certPath, keyPath, cerPath := filepath.Join(dir, "s2s.pem"), filepath.Join(dir, "s2s.key"), filepath.Join(dir, "s2s.cer")
	// Existing files are replaced, whatever their mode was.
	if err := os.WriteFile(keyPath, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.WritePEM(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	if err := c.ExportDER(cerPath); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{certPath: 0o644, keyPath: 0o600, cerPath: 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", filepath.Base(path), fi.Mode().Perm(), want)
		}
	}
	// The exported .cer is byte for byte what openssl wrote.
	got, _ := os.ReadFile(cerPath)
	want, _ := os.ReadFile(filepath.Join("testdata", "s2s.cer"))
	if !bytes.Equal(got, want) {
		t.Error("ExportDER output differs from openssl's DER")
	}
	back, err := LoadPEM(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if back.Thumbprint() != c.Thumbprint() || !back.Key.Equal(c.Key) {
		t.Error("written certificate or key does not load back the same")
	}
	assertNoTempFiles(t, dir)
}

func TestWriteFailureLeavesFilesAlone(t *testing.T) {
	c := loadTestCert(t, "s2s")
	dir := t.TempDir()
	certPath := filepath.Join(dir, "s2s.pem")
	if err := os.WriteFile(certPath, []byte("previous"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The key cannot be written (no such directory), so nothing is renamed.
	if err := c.WritePEM(certPath, filepath.Join(dir, "missing", "s2s.key")); err == nil {
		t.Fatal("WritePEM succeeded")
	}
	if b, _ := os.ReadFile(certPath); string(b) != "previous" {
		t.Errorf("certificate file changed to %q", b)
	}
	assertNoTempFiles(t, dir)

	public := &Certificate{X509: c.X509}
	if err := public.WritePEM(certPath, filepath.Join(dir, "s2s.key")); !errors.Is(err, ErrNoPrivateKey) {
		t.Errorf("WritePEM without key: %v, want ErrNoPrivateKey", err)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// rsaKey is a helper for tests that need the public key of a test cert.
func rsaKey(t testing.TB, c *Certificate) *rsa.PublicKey {
	t.Helper()
	pub, err := rsaPublicKey(c.X509)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestCertificateNeverPrintsKey prints a certificate the ways a log line
// would and checks that no private key material appears.
func TestCertificateNeverPrintsKey(t *testing.T) {
	c := loadTestCert(t, "s2s")
	secret := c.Key.D.String()
	asJSON, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"%v":   fmt.Sprintf("%v", c),
		"%+v":  fmt.Sprintf("%+v", c),
		"%s":   c.String(),
		"JSON": string(asJSON),
	} {
		if strings.Contains(out, secret) || !strings.Contains(out, s2sThumbprint) {
			t.Errorf("%s: %s", name, out)
		}
	}
}
