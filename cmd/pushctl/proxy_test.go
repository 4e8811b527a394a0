package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/settings"
)

func TestProxyEnableShowDisable(t *testing.T) {
	_, url := startNATS(t)

	r := pushctl(t, "proxy", "show", url)
	if r.code != 0 || !regexp.MustCompile(`(?m)^Enabled +: false$`).MatchString(r.stdout) {
		t.Fatalf("show before enable: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = pushctl(t, "proxy", "enable", "--organization", "fabrikam.com", "--uri", "https://relay.test/PushNotifications", url)
	if r.code != 0 {
		t.Fatalf("enable: %d %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"DisplayName  : On Premises Proxy app",
		"Enabled      : true",
		"Organization : fabrikam.com",
		"Uri          : https://relay.test/PushNotifications",
		"Identity     : OnPrem-Proxy",
		"Name         : OnPrem-Proxy",
		"WhenCreated  : ",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("enable output lacks %q:\n%s", want, r.stdout)
		}
	}

	again := pushctl(t, "proxy", "enable", "--organization", "fabrikam.com", url)
	if again.code != 0 || again.stdout != r.stdout || !strings.Contains(again.stderr, "nothing changed") {
		t.Fatalf("second enable changed something:\n%s\n%s", again.stdout, again.stderr)
	}

	r = pushctl(t, "proxy", "disable", "--json", url)
	var p settings.Proxy
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || r.code != 0 || p.Enabled || p.Organization != "fabrikam.com" {
		t.Fatalf("disable --json: %d %q %v", r.code, r.stdout, err)
	}
}

func TestProxyErrors(t *testing.T) {
	_, url := startNATS(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"not a domain", []string{"proxy", "enable", "--organization", "fabrikam", url}, 1, "not a domain name"},
		{"missing organization", []string{"proxy", "enable", url}, 2, "--organization is required"},
		{"bad uri", []string{"proxy", "enable", "--organization", "fabrikam.com", "--uri", "relay", url}, 1, "not an absolute"},
		{"unreachable NATS", []string{"proxy", "show", "--nats-url", "nats://127.0.0.1:1"}, 1, "connecting to NATS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oneLineError(t, pushctl(t, tt.args...), tt.code, tt.want)
		})
	}
}
