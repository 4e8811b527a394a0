package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// exportCert writes a new public S2S certificate for domain as a .cer file.
func exportCert(t *testing.T, domain string) (*tokens.Certificate, string) {
	t.Helper()
	c, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "OAuthCert.cer")
	if err := c.ExportDER(path); err != nil {
		t.Fatal(err)
	}
	return c, path
}

func TestRelayPartnerCommands(t *testing.T) {
	_, url := startNATS(t)
	current, currentFile := exportCert(t, "fabrikam.com")
	next, nextFile := exportCert(t, "fabrikam.com")

	r := pushctl(t, "relay", "partner", "add", "--organization", "fabrikam.com", "--certificate", currentFile, url)
	if r.code != 0 {
		t.Fatalf("add: %d %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"Organization : fabrikam.com",
		"Realm        : fabrikam.com",
		"Thumbprint   : " + current.Thumbprint(),
		"Type         : Asymmetric",
		"Usage        : Verify",
		"Status       : Active",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("add output lacks %q:\n%s", want, r.stdout)
		}
	}

	r = pushctl(t, "relay", "partner", "add", "--organization", "fabrikam.com", "--certificate", nextFile,
		"--start", "2030-01-01", "--end", "2030-06-30", url)
	if r.code != 0 || !strings.Contains(r.stdout, "StartDate    : 2030-01-01T00:00:00Z") || !strings.Contains(r.stdout, "Status       : Pending") {
		t.Fatalf("add next: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = pushctl(t, "relay", "partner", "list", url)
	if r.code != 0 || strings.Count(r.stdout, "Organization : fabrikam.com") != 2 || !regexp.MustCompile(`(?m)^$`).MatchString(r.stdout) {
		t.Fatalf("list: %d\n%s", r.code, r.stdout)
	}
	r = pushctl(t, "relay", "partner", "list", "--json", url)
	var partners []registry.Partner
	if err := json.Unmarshal([]byte(r.stdout), &partners); err != nil || len(partners) != 1 || len(partners[0].Certificates) != 2 {
		t.Fatalf("list --json: %v %s", err, r.stdout)
	}

	r = pushctl(t, "relay", "partner", "remove", "--organization", "fabrikam.com", "--thumbprint", strings.ToLower(current.Thumbprint()), url)
	if r.code != 0 || !strings.Contains(r.stdout, "1 certificate(s) left") {
		t.Fatalf("remove certificate: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = pushctl(t, "relay", "partner", "list", "--organization", "fabrikam.com", url)
	if strings.Contains(r.stdout, current.Thumbprint()) || !strings.Contains(r.stdout, next.Thumbprint()) {
		t.Fatalf("list after remove:\n%s", r.stdout)
	}
	r = pushctl(t, "relay", "partner", "remove", "--organization", "fabrikam.com", url)
	if r.code != 0 || !strings.Contains(r.stdout, "Removed partner fabrikam.com") {
		t.Fatalf("remove partner: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = pushctl(t, "relay", "partner", "list", "--json", url)
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("list --json of nothing: %q", r.stdout)
	}
}

func TestRelayPartnerErrors(t *testing.T) {
	_, url := startNATS(t)
	_, certFile := exportCert(t, "fabrikam.com")
	if r := pushctl(t, "relay", "partner", "add", "--organization", "fabrikam.com", "--certificate", certFile, url); r.code != 0 {
		t.Fatal(r.stderr)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing flags", []string{"relay", "partner", "add", url}, 2, "--organization and --certificate are required"},
		{"no such file", []string{"relay", "partner", "add", "--organization", "fabrikam.com", "--certificate", "/nonexistent.cer", url}, 1, "reading certificate"},
		{"not a domain", []string{"relay", "partner", "add", "--organization", "fabrikam", "--certificate", certFile, url}, 1, "organization"},
		{"bad date", []string{"relay", "partner", "add", "--organization", "fabrikam.com", "--certificate", certFile, "--end", "soon", url}, 2, "--end"},
		{"certificate of another organization", []string{"relay", "partner", "add", "--organization", "contoso.com", "--certificate", certFile, url}, 1, "already registered for another organization"},
		{"unknown partner", []string{"relay", "partner", "remove", "--organization", "contoso.com", url}, 1, "not registered"},
		{"unknown thumbprint", []string{"relay", "partner", "remove", "--organization", "fabrikam.com", "--thumbprint", strings.Repeat("A", 40), url}, 1, "not registered"},
		{"unreachable NATS", []string{"relay", "partner", "list", "--nats-url", "nats://127.0.0.1:1"}, 1, "connecting to NATS"},
		{"unknown subcommand", []string{"relay", "partner", "rotate"}, 2, `unknown command "rotate"`},
		{"quota without a value", []string{"relay", "partner", "quota", "--organization", "fabrikam.com", url}, 2, "give --quota RATE[:BURST] or --clear"},
		{"quota and clear", []string{"relay", "partner", "quota", "--organization", "fabrikam.com", "--quota", "10", "--clear", url}, 2, "give --quota RATE[:BURST] or --clear"},
		{"quota not a number", []string{"relay", "partner", "quota", "--organization", "fabrikam.com", "--quota", "lots", url}, 1, "is not a number"},
		{"quota of nothing", []string{"relay", "partner", "quota", "--organization", "fabrikam.com", "--quota", "0", url}, 1, "must be more than 0"},
		{"quota of an unknown partner", []string{"relay", "partner", "quota", "--organization", "contoso.com", "--quota", "10", url}, 1, "not registered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oneLineError(t, pushctl(t, tt.args...), tt.code, tt.want)
		})
	}
}

func TestRelayPartnerQuota(t *testing.T) {
	_, url := startNATS(t)
	_, certFile := exportCert(t, "fabrikam.com")
	if r := pushctl(t, "relay", "partner", "add", "--organization", "fabrikam.com", "--certificate", certFile, url); r.code != 0 {
		t.Fatal(r.stderr)
	}
	r := pushctl(t, "relay", "partner", "quota", "--organization", "Fabrikam.com", "--quota", "20000", url)
	if r.code != 0 || !strings.Contains(r.stdout, "Quota of fabrikam.com: 20000 notifications/s, bursts of 80000") {
		t.Fatalf("quota: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := pushctl(t, "relay", "partner", "list", url); !strings.Contains(r.stdout, "20000/s, burst 80000") {
		t.Fatalf("list after quota:\n%s", r.stdout)
	}
	r = pushctl(t, "relay", "partner", "quota", "--organization", "fabrikam.com", "--clear", url)
	if r.code != 0 || !strings.Contains(r.stdout, "Cleared the quota of fabrikam.com") {
		t.Fatalf("clear: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := pushctl(t, "relay", "partner", "list", url); strings.Contains(r.stdout, "burst 80000") {
		t.Fatalf("list after clear:\n%s", r.stdout)
	}
}

func TestRelayAppCommands(t *testing.T) {
	_, url := startNATS(t)
	r := pushctl(t, "relay", "app", "add", "--app-id", "demo", "--provider", "log", url)
	if r.code != 0 || !strings.Contains(r.stdout, "AppId       : demo") || !strings.Contains(r.stdout, "Provider    : log") {
		t.Fatalf("add log: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	apnsArgs := []string{"relay", "app", "add", "--app-id", "com.example.mail", "--provider", "apns",
		"--apns-key-file", "AuthKey_ABC123DEFG.p8", "--apns-key-id", "ABC123DEFG", "--apns-team-id", "TEAM123456",
		"--apns-topic", "com.example.mail", "--apns-environment", "sandbox", url}
	// An app of a real push service names the organizations that may use it.
	oneLineError(t, pushctl(t, append(apnsArgs, "--skip-check")...), 2, "--organization is required")
	apnsArgs = append(apnsArgs, "--organization", "Fabrikam.com")
	// The key file does not exist here: refused unless the check is skipped.
	oneLineError(t, pushctl(t, apnsArgs...), 1, "--skip-check")
	r = pushctl(t, append(apnsArgs, "--skip-check")...)
	if r.code != 0 {
		t.Fatalf("add apns --skip-check: %d %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "BoundTo     : fabrikam.com") {
		t.Fatalf("the organization is not shown:\n%s", r.stdout)
	}
	keyLine := regexp.MustCompile(`(?m)^KeyFile +: (/.*AuthKey_ABC123DEFG\.p8)$`).FindStringSubmatch(r.stdout)
	if keyLine == nil || !filepath.IsAbs(keyLine[1]) {
		t.Fatalf("the key file path is not shown absolute:\n%s", r.stdout)
	}
	oneLineError(t, pushctl(t, append(apnsArgs, "--skip-check")...), 1, "--replace")
	if r := pushctl(t, append(apnsArgs, "--skip-check", "--replace")...); r.code != 0 {
		t.Fatalf("replace: %s", r.stderr)
	}

	r = pushctl(t, "relay", "app", "list", "--json", url)
	var apps []registry.App
	if err := json.Unmarshal([]byte(r.stdout), &apps); err != nil || len(apps) != 2 || apps[0].APNs == nil || apps[0].APNs.TeamID != "TEAM123456" {
		t.Fatalf("list --json: %v %s", err, r.stdout)
	}
	r = pushctl(t, "relay", "app", "list", url)
	if r.code != 0 || !strings.Contains(r.stdout, "Environment : sandbox") || !strings.Contains(r.stdout, "\n\nAppId ") {
		t.Fatalf("list:\n%s", r.stdout)
	}

	r = pushctl(t, "relay", "app", "bind", "--app-id", "com.example.mail", "--organization", "contoso.com", "--json", url)
	var bound registry.App
	if err := json.Unmarshal([]byte(r.stdout), &bound); err != nil || strings.Join(bound.Organizations, ",") != "contoso.com,fabrikam.com" {
		t.Fatalf("bind: %v %s %s", err, r.stdout, r.stderr)
	}
	oneLineError(t, pushctl(t, "relay", "app", "bind", "--app-id", "com.example.mail", url), 2, "--organization are required")
	oneLineError(t, pushctl(t, "relay", "app", "bind", "--app-id", "nope", "--organization", "contoso.com", url), 1, "not registered")

	oneLineError(t, pushctl(t, "relay", "app", "add", "--app-id", "x", "--provider", "fcm", "--apns-topic", "t", url), 2, "--apns-topic not used with --provider fcm")
	oneLineError(t, pushctl(t, "relay", "app", "add", "--app-id", "x", "--provider", "wns", url), 1, "not one of")
	oneLineError(t, pushctl(t, "relay", "app", "add", "--app-id", "x", "--provider", "apns", "--skip-check", url), 1, "key file is required")
	oneLineError(t, pushctl(t, "relay", "app", "add", "--app-id", "MonitoringProbeAppId", "--provider", "log", url), 1, "reserved")

	if r := pushctl(t, "relay", "app", "remove", "--app-id", "demo", url); r.code != 0 || !strings.Contains(r.stdout, "Removed app demo") {
		t.Fatalf("remove: %d %s %s", r.code, r.stdout, r.stderr)
	}
	oneLineError(t, pushctl(t, "relay", "app", "remove", "--app-id", "demo", url), 1, "not registered")
}
