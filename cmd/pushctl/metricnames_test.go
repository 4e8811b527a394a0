package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

// metricName finds the pushproxy metric names a query or a rule names.
var metricName = regexp.MustCompile(`\bpushproxy_[a-z0-9_]+\b`)

// TestDashboardAndAlertsUseExportedMetrics runs every part of pushproxy in
// one process (Graph and EWS sources and the reconciler included) through a push, then checks
// that each pushproxy_* metric the Grafana dashboard and the Prometheus
// rules name is registered by some part: a renamed metric must take the
// dashboard and the rules with it. A registered vector appears in /metrics
// only once it has a child, so the check asks the registry itself.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	dir := t.TempDir()
	graphUsers := testfs.Write(t, dir, "graph-users.json", `{"users":[{"user_id":"8ee44408-0679-472c-bc2a-692812af3437","tenant":"example.com","address":"alice@example.com"}]}`)
	ewsSubs := testfs.Write(t, dir, "ews.json", `{"subscriptions":[{"subscription_id":"sub-1","tenant":"example.com","user":"alice@example.com","inbox_folder_id":"inbox-1"}]}`)
	doveadmKey := testfs.Write(t, dir, "doveadm-key", "secret")
	mailboxes := testfs.Write(t, dir, "mailboxes.json", `{"mailboxes":[{"tenant":"example.com","user":"alice@example.com"}]}`)
	watched := testfs.Write(t, dir, "watched.json", `{"users":[{"tenant":"example.com","user":"alice@example.com"}]}`)
	reg := service.NewRegistry()
	// The reconciler runs with counters nobody answers at (127.0.0.1:9);
	// the Graph and EWS subscription managers and the IMAP watcher run too,
	// failing to reach them, so that their metrics exist.
	nobody := "http://127.0.0.1:9"
	ingestAddr, natsAddr, _, _ := startStandaloneWith(t, filepath.Join(dir, "data"), reg,
		"--graph-users", graphUsers, "--graph-client-state", "secret", "--ews-subscriptions", ewsSubs,
		"--doveadm-url", nobody, "--doveadm-api-key-file", doveadmKey,
		"--graph-app-tenant-id", "8ee44408-0679-472c-bc2a-692812af3400", "--graph-client-id", "8ee44408-0679-472c-bc2a-692812af3401",
		"--graph-client-secret-file", doveadmKey, "--graph-authority-url", nobody, "--graph-api-url", nobody+"/v1.0",
		"--graph-notification-url", "https://push.example.com/v1/graph",
		"--ews-url", nobody+"/EWS/Exchange.asmx", "--ews-username", "svc", "--ews-password-file", doveadmKey,
		"--ews-notification-url", "https://push.example.com/v1/ews", "--ews-mailboxes-file", mailboxes,
		"--imap-addr", "127.0.0.1:9", "--imap-tls", "none", "--imap-master-user", "master", "--imap-master-password-file", doveadmKey,
		"--imap-watch-users-file", watched)

	// A push makes the parts that register on first use do so.
	base := "http://" + ingestAddr
	if code := post(t, base+"/v1/subscriptions", `{"tenant":"example.com","user":"alice@example.com","appId":"demo","deviceId":"phone-1","platform":"APNS"}`); code != http.StatusCreated {
		t.Fatalf("subscribe: %d", code)
	}
	if code := post(t, base+"/v1/events", `{"user":"alice@example.com","kind":"new","unread":1,"change_id":"m-1","occurred_at":"2026-01-01T00:00:00Z"}`); code != http.StatusOK {
		t.Fatalf("event: %d", code)
	}
	conn, keyer := connectStandalone(t, natsAddr)
	waitForSent(t, conn.JS, keyer, "example.com", "alice@example.com")

	names := map[string][]string{} // metric → where it is named
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			title, _ := v["title"].(string)
			if title != "" {
				where = "dashboard panel " + title
			}
			for k, child := range v {
				if expr, ok := child.(string); ok && k == "expr" {
					for _, n := range metricName.FindAllString(expr, -1) {
						names[n] = append(names[n], where)
					}
				}
				walk(where, child)
			}
		case []any:
			for _, child := range v {
				walk(where, child)
			}
		}
	}
	var dashboard any
	if err := json.Unmarshal(readRepoFile(t, "deploy", "grafana", "pushproxy.json"), &dashboard); err != nil {
		t.Fatalf("reading the dashboard: %v", err)
	}
	walk("dashboard", dashboard)
	for _, n := range metricName.FindAllString(string(readRepoFile(t, "deploy", "prometheus", "alerts.yaml")), -1) {
		names[n] = append(names[n], "deploy/prometheus/alerts.yaml")
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metric names in the dashboard and the rules; the parsing is wrong", len(names))
	}
	for name, where := range names {
		if !registered(reg, name) {
			slices.Sort(where)
			t.Errorf("%s is not exported by any part, yet named by %s", name, strings.Join(slices.Compact(where), ", "))
		}
	}
}

// registered reports whether reg has a metric called name (or a histogram
// or summary of which name is a series): registering another metric of
// that name then fails.
func registered(reg *prometheus.Registry, name string) bool {
	for _, n := range []string{name, strings.TrimSuffix(name, "_bucket"), strings.TrimSuffix(name, "_sum"), strings.TrimSuffix(name, "_count")} {
		probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: "probe of the metric-name test"})
		if err := reg.Register(probe); err != nil {
			return true
		}
		reg.Unregister(probe)
	}
	return false
}

func readRepoFile(t *testing.T, parts ...string) []byte {
	t.Helper()
	return testfs.Read(t, filepath.Join(append([]string{"..", ".."}, parts...)...))
}
