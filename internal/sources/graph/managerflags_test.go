package graph

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestManagerFlags(t *testing.T) {
	dir := t.TempDir()
	secretFile := testfs.Write(t, dir, "secret", "s3cret~value\n")
	app := []string{"--graph-users", "testdata/directory.json", "--graph-app-tenant-id", tenantID, "--graph-client-id", clientID,
		"--graph-client-secret-file", secretFile, "--graph-client-state", "old-secret," + secret, "--graph-key", managerKey}
	url := "--graph-notification-url=https://push.example.com/v1/graph?key=" + managerKey
	tests := []struct {
		name    string
		args    []string
		enabled bool
		err     string // contained in Manager's error; "" when it works
		check   func(t *testing.T, cfg ManagerConfig)
	}{
		{name: "disabled without a notification URL", args: app},
		{name: "defaults", args: append(app, url), enabled: true, check: func(t *testing.T, cfg ManagerConfig) {
			if cfg.Lifetime != MaxMailSubscriptionLifetime || cfg.Rate != DefaultManageRate || cfg.DeleteOnStop ||
				cfg.LifecycleURL != cfg.NotificationURL || cfg.TenantID != tenantID || cfg.Key != managerKey ||
				strings.Join(cfg.ClientStates, ",") != "old-secret,"+secret || cfg.APIURL != DefaultAPIURL {
				t.Errorf("config %+v", cfg)
			}
		}},
		{name: "every flag", args: append(app, url, "--graph-lifecycle-url", "https://push.example.com/v1/graph/lifecycle?key="+managerKey,
			"--graph-subscription-lifetime", "45m", "--graph-manage-rate", "2.5", "--graph-delete-on-stop"), enabled: true,
			check: func(t *testing.T, cfg ManagerConfig) {
				if cfg.Lifetime != 45*time.Minute || cfg.Rate != 2.5 || !cfg.DeleteOnStop || !strings.HasSuffix(cfg.LifecycleURL, "/v1/graph/lifecycle?key="+managerKey) {
					t.Errorf("config %+v", cfg)
				}
			}},
		{name: "lifetime over Graph's maximum", args: append(app, url, "--graph-subscription-lifetime", "10071m"), enabled: true, err: "not between 1m and"},
		{name: "relative URL", args: append(app, "--graph-notification-url", "/v1/graph"), enabled: true, err: "not an http(s) URL"},
		{name: "no app", args: []string{"--graph-users", "testdata/directory.json", "--graph-client-state", secret, url}, enabled: true, err: "--graph-client-id are required"},
		{name: "no directory", args: []string{url, "--graph-app-tenant-id", tenantID, "--graph-client-id", clientID}, enabled: true, err: "--graph-users is required"},
		{name: "no clientState", args: []string{"--graph-users", "testdata/directory.json", "--graph-app-tenant-id", tenantID, "--graph-client-id", clientID,
			"--graph-client-secret-file", secretFile, url}, enabled: true, err: "--graph-client-state is required"},
		{name: "no credential", args: []string{"--graph-users", "testdata/directory.json", "--graph-app-tenant-id", tenantID, "--graph-client-id", clientID,
			"--graph-client-state", secret, url}, enabled: true, err: "a certificate or a client secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("pushproxy", flag.ContinueOnError)
			src := Flags(fs)
			ms := ManagerFlags(fs, src, CounterFlags(fs, src))
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if ms.ManagerEnabled() != tt.enabled {
				t.Fatalf("enabled %v", ms.ManagerEnabled())
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
			if tt.check != nil {
				tt.check(t, m.cfg)
			}
		})
	}
}

func TestManagerFlagsHelp(t *testing.T) {
	fs := flag.NewFlagSet("pushproxy", flag.ContinueOnError)
	src := Flags(fs)
	ManagerFlags(fs, src, CounterFlags(fs, src))
	for _, name := range []string{"graph-notification-url", "graph-lifecycle-url", "graph-subscription-lifetime", "graph-manage-rate", "graph-delete-on-stop"} {
		if f := fs.Lookup(name); f == nil || f.Usage == "" {
			t.Errorf("flag --%s is missing or has no help", name)
		}
	}
}

func TestNewManagerChecksConfig(t *testing.T) {
	h := newManagerHarness(t)
	tests := []struct {
		name   string
		mutate func(*ManagerConfig)
		err    string
	}{
		{"no users", func(c *ManagerConfig) { c.Users = nil }, "directory is required"},
		{"no tokens", func(c *ManagerConfig) { c.Tokens = nil }, "token source is required"},
		{"no store", func(c *ManagerConfig) { c.Store = nil }, "store is required"},
		{"no notification URL", func(c *ManagerConfig) { c.NotificationURL, c.LifecycleURL = "", "" }, "notification URL is required"},
		{"lifecycle URL with a fragment", func(c *ManagerConfig) { c.LifecycleURL = "https://push.example.com/l#x" }, "lifecycle URL"},
		{"API URL with a query", func(c *ManagerConfig) { c.APIURL = "https://graph.microsoft.com/v1.0?x=1" }, "API URL"},
		{"lifetime too long", func(c *ManagerConfig) { c.Lifetime = MaxMailSubscriptionLifetime + time.Minute }, "not between"},
		{"renewing before the creation", func(c *ManagerConfig) { c.RenewBefore = c.Lifetime }, "does not fit"},
		{"jitter too long", func(c *ManagerConfig) { c.RenewBefore, c.RenewJitter = time.Hour, time.Hour }, "jitter"},
		{"negative rate", func(c *ManagerConfig) { c.Rate = -1 }, "negative"},
		{"no clientState", func(c *ManagerConfig) { c.ClientStates = []string{""} }, "clientState secret is required"},
		{"clientState too long", func(c *ManagerConfig) { c.ClientStates = []string{strings.Repeat("s", MaxClientState+1)} }, "longer than Graph's limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := h.config()
			tt.mutate(&cfg)
			if _, err := NewManager(cfg); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v, want %q", err, tt.err)
			}
		})
	}
	// Registered once, the metrics cannot be registered again; the
	// lifecycle counter is shared with a source on the same registry.
	reg := prometheus.NewRegistry()
	cfg := h.config()
	cfg.Metrics = reg
	if _, err := NewSource(Config{ClientStates: []string{secret}, Users: directory(t), Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewManager(cfg); err != nil {
		t.Fatalf("a manager next to a source: %v", err)
	}
	if _, err := NewManager(cfg); err == nil {
		t.Error("registering the manager's metrics twice did not fail")
	}
}
