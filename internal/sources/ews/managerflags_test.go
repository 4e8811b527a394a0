package ews

import (
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/ntlm"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestManagerFlags(t *testing.T) {
	dir := t.TempDir()
	password := testfs.Write(t, dir, "password", "pa55word\n")
	mailboxes := filepath.Join("testdata", "mailboxes.json")
	counter := []string{"--ews-url", "https://mail.fabrikam.com/EWS/Exchange.asmx", "--ews-username", "svc@fabrikam.com", "--ews-password-file", password}
	manager := []string{"--ews-notification-url", "https://push.fabrikam.com/v1/ews?key=k", "--ews-mailboxes-file", mailboxes}
	tests := []struct {
		name      string
		args      []string
		enabled   bool
		err       string // contained in Manager's error; "" when it works
		frequency time.Duration
		rate      float64
	}{
		{"defaults", append(counter, manager...), true, "", DefaultStatusFrequency, DefaultManageRate},
		{"set", append(append(counter, manager...), "--ews-status-frequency", "5m", "--ews-manage-rate", "2.5", "--ews-impersonate"), true, "", 5 * time.Minute, 2.5},
		{"ntlm", append(append(counter, manager...), "--ews-auth", "ntlm"), true, "", DefaultStatusFrequency, DefaultManageRate},
		{"disabled", counter, false, "", 0, 0},
		{"no EWS server", manager, true, "--ews-url", 0, 0},
		{"no mailboxes", append(counter, "--ews-notification-url", "https://push.fabrikam.com/v1/ews"), true, "--ews-mailboxes-file is required", 0, 0},
		{"missing mailboxes", append(counter, "--ews-notification-url", "https://push.fabrikam.com/v1/ews", "--ews-mailboxes-file", filepath.Join(dir, "none.json")), true, "reading EWS mailbox list", 0, 0},
		{"no password", append([]string{"--ews-url", "https://mail.fabrikam.com/EWS/Exchange.asmx", "--ews-username", "svc"}, manager...), true, "--ews-password-file are required", 0, 0},
		{"seconds", append(append(counter, manager...), "--ews-status-frequency", "90s"), true, "whole number of minutes", 0, 0},
		{"relative notification URL", append(counter, "--ews-notification-url", "/v1/ews", "--ews-mailboxes-file", mailboxes), true, "not an http(s) URL", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
			ms := ManagerFlags(fs, CounterFlags(fs))
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if ms.ManagerEnabled() != tt.enabled {
				t.Fatalf("enabled = %v", ms.ManagerEnabled())
			}
			if !tt.enabled {
				return
			}
			m, err := ms.Manager(NewMemorySubscriptionStore(), nil, zerolog.Nop(), prometheus.NewRegistry())
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.cfg.StatusFrequency != tt.frequency || m.cfg.Rate != tt.rate || m.cfg.Username != "svc@fabrikam.com" || m.cfg.Password != "pa55word" ||
				m.cfg.URL != "https://mail.fabrikam.com/EWS/Exchange.asmx" || m.cfg.NotificationURL != "https://push.fabrikam.com/v1/ews?key=k" {
				t.Fatalf("config %+v", m.cfg)
			}
			if _, isNTLM := m.soap.client.Transport.(*ntlm.Transport); m.cfg.NTLM != slices.Contains(tt.args, "ntlm") || isNTLM != m.cfg.NTLM {
				t.Fatalf("NTLM %v, transport %T", m.cfg.NTLM, m.soap.client.Transport)
			}
		})
	}
}
