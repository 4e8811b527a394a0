package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/probe"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/relayproto/relayprototest"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

// testRelay is a local relay that verifies real S2S tokens against the
// partners registered in it and records the notifications it accepted.
type testRelay struct {
	*relayprototest.Relay
	partners *tokens.Registry
}

func newTestRelay(t *testing.T) *testRelay {
	t.Helper()
	r := &testRelay{partners: tokens.NewRegistry()}
	verifier, err := tokens.NewVerifier(tokens.VerifierOptions{
		PrincipalID: settings.DefaultRelayPrincipal, Host: "127.0.0.1", Partners: r.partners,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Relay = relayprototest.NewRelay(t, func(w http.ResponseWriter, req *http.Request) bool {
		raw, err := tokens.BearerToken(req.Header.Get("Authorization"))
		if err == nil {
			_, err = verifier.Verify(req.Context(), raw)
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", tokens.Challenge(settings.DefaultRelayPrincipal, settings.DefaultServiceName+"@*", err))
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(relayproto.Fault{Message: err.Error()})
			return false
		}
		return true
	})
	return r
}

// register makes the relay accept the tokens of the certificate in dir.
func (r *testRelay) register(t *testing.T, dir, thumbprint string) {
	t.Helper()
	cert, err := onprem.Load(dir, thumbprint)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.partners.Put(tokens.Partner{Organization: "fabrikam.com", Realm: "fabrikam.com",
		Certificates: []tokens.RegisteredCert{{Cert: cert.X509}}}); err != nil {
		t.Fatal(err)
	}
}

// setUpProxy creates a certificate and enables the proxy toward uri; it
// returns the certificate's folder and thumbprint.
func setUpProxy(t *testing.T, natsURL, uri string) (dir, thumbprint string) {
	t.Helper()
	dir = t.TempDir()
	r := pushctl(t, "auth", "new-certificate", "--domain", "fabrikam.com", "--out", dir, natsURL)
	m := thumbprintLine.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("new-certificate: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := pushctl(t, "proxy", "enable", "--organization", "fabrikam.com", "--uri", uri, natsURL); r.code != 0 {
		t.Fatalf("proxy enable: %s", r.stderr)
	}
	return dir, m[1]
}

// unusedURI is a relay URI where nothing listens.
func unusedURI(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/PushNotifications"
}

var (
	resultBlock = regexp.MustCompile(`^ResultType : (Succeeded|Failed)\nError      :(?: (.*))?\nException  :(?: (.*))?\n$`)
)

func TestProbeCommand(t *testing.T) {
	conn, natsURL := startNATS(t)
	relay := newTestRelay(t)
	dir, thumb := setUpProxy(t, natsURL, relay.URI())

	// Certificate not registered at the relay: token rejected.
	r := pushctl(t, "probe", natsURL)
	m := resultBlock.FindStringSubmatch(r.stdout)
	if r.code != 1 || m == nil || m[1] != "Failed" || !strings.HasPrefix(m[2], "it was not possible to authenticate to "+relay.URI()) || !strings.Contains(m[3], "401") {
		t.Fatalf("unregistered certificate: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "Authentication") {
		t.Fatalf("stderr %q, want one line naming the class", r.stderr)
	}

	relay.register(t, dir, thumb)
	r = pushctl(t, "probe", natsURL)
	if r.code != 0 || r.stdout != "ResultType : Succeeded\nError      :\nException  :\n" || r.stderr != "" {
		t.Fatalf("registered certificate: code %d\n%q\n%q", r.code, r.stdout, r.stderr)
	}
	got := relay.Notifications()
	if len(got) != 1 || !got[0].IsMonitoring() {
		t.Fatalf("relay got %+v, want the monitoring notification", got)
	}
	last, err := probe.Last(context.Background(), conn.JS, probe.SubjectConnectivity)
	if err != nil || !last.Succeeded() || last.URI != relay.URI() {
		t.Fatalf("recorded result %+v, %v", last, err)
	}

	tests := []struct {
		name  string
		setup []string
		args  []string
		class string
		error string
	}{
		{"relay unreachable", []string{"proxy", "enable", "--organization", "fabrikam.com", "--uri", unusedURI(t)}, nil,
			"Networking", "a connection to the push notification service at http://127.0.0.1:"},
		{"proxy disabled", []string{"proxy", "disable"}, nil,
			"PushNotifications", "Push Notifications settings could not be found: the push notification proxy is not enabled; run pushctl proxy enable --organization"},
		{"certificate missing", []string{"proxy", "enable", "--organization", "fabrikam.com", "--uri", relay.URI()}, []string{"--cert-dir", t.TempDir()},
			"Authentication", "it was not possible to authenticate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := pushctl(t, append(tt.setup, natsURL)...); r.code != 0 {
				t.Fatalf("%v: %s", tt.setup, r.stderr)
			}
			r := pushctl(t, append(append([]string{"probe"}, tt.args...), natsURL)...)
			m := resultBlock.FindStringSubmatch(r.stdout)
			if r.code != 1 || m == nil || m[1] != "Failed" || !strings.HasPrefix(m[2], tt.error) || m[3] == "" {
				t.Fatalf("code %d\n%s\nwant Failed with Error starting %q", r.code, r.stdout, tt.error)
			}
			if strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "("+tt.class+")") {
				t.Fatalf("stderr %q, want one line with (%s)", r.stderr, tt.class)
			}
		})
	}

	r = pushctl(t, "probe", "--json", "--cert-dir", t.TempDir(), natsURL)
	var res probe.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 1 || res.Class != "Authentication" {
		t.Fatalf("--json: %d %q %v", r.code, r.stdout, err)
	}
	if !strings.Contains(r.stdout, `"FailureClass": "Authentication"`) || !strings.Contains(r.stdout, `"ResultType": "Failed"`) {
		t.Fatalf("--json output lacks the result type or failure class:\n%s", r.stdout)
	}
	if r := pushctl(t, "probe", "--json", natsURL); r.code != 0 || !strings.Contains(r.stdout, `"ResultType": "Succeeded"`) {
		t.Fatalf("--json success: %d %s %s", r.code, r.stdout, r.stderr)
	}
}
