package relay

import (
	"context"
	"flag"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// quotaMap is a QuotaSource over a fixed map, for the limiter alone; the
// partner registry's, over NATS, is in TestTenantQuotaFromRegistry.
type quotaMap map[string]registry.Quota

func (m quotaMap) Quota(org string) (registry.Quota, bool) {
	q, ok := m[org]
	return q, ok
}

func TestTenantLimiterQuotas(t *testing.T) {
	type step struct {
		tenant string
		n      int
		at     time.Duration // after the test's start
		quotas quotaMap      // when set, the source's quotas from this step on
		ok     bool
		wait   time.Duration // when refused
		want   quota         // the quota applied
	}
	fabrikam := quotaMap{"fabrikam.com": {Rate: 1000, Burst: 5}}
	tests := []struct {
		name        string
		rate        float64
		burst       int
		quotas      quotaMap
		steps       []step
		wantTenants int // buckets at the end
	}{
		{name: "default", rate: 10, burst: 20, steps: []step{
			{tenant: "fabrikam.com", n: 20, ok: true, want: quota{10, 20}},
			{tenant: "fabrikam.com", n: 1, wait: 100 * time.Millisecond, want: quota{10, 20}},
			{tenant: "fabrikam.com", n: 1, at: 100 * time.Millisecond, ok: true, want: quota{10, 20}},
			// A request larger than the burst costs the whole burst.
			{tenant: "contoso.com", n: 500, ok: true, want: quota{10, 20}},
		}, wantTenants: 2},
		{name: "partner's own quota", rate: 10, burst: 20, quotas: fabrikam, steps: []step{
			{tenant: "fabrikam.com", n: 5, ok: true, want: quota{1000, 5}},
			{tenant: "fabrikam.com", n: 2, wait: 2 * time.Millisecond, want: quota{1000, 5}},
			{tenant: "contoso.com", n: 20, ok: true, want: quota{10, 20}},
		}, wantTenants: 2},
		{name: "quota changed between requests", rate: 10, burst: 20, steps: []step{
			{tenant: "fabrikam.com", n: 4, ok: true, want: quota{10, 20}},
			{tenant: "fabrikam.com", n: 2, quotas: fabrikam, ok: true, want: quota{1000, 5}},
			{tenant: "fabrikam.com", n: 4, wait: 1 * time.Millisecond, want: quota{1000, 5}},
			// Back to the default: its rate, and a burst no longer of 5.
			{tenant: "fabrikam.com", n: 5, at: 2 * time.Second, quotas: quotaMap{}, ok: true, want: quota{10, 20}},
			{tenant: "fabrikam.com", n: 1, at: 2 * time.Second, wait: 100 * time.Millisecond, want: quota{10, 20}},
			{tenant: "fabrikam.com", n: 10, at: 3100 * time.Millisecond, ok: true, want: quota{10, 20}},
		}, wantTenants: 1},
		{name: "no default limit, a partner's quota", rate: -1, burst: 1, quotas: fabrikam, steps: []step{
			{tenant: "contoso.com", n: 100000, ok: true, want: quota{-1, 1}},
			{tenant: "fabrikam.com", n: 5, ok: true, want: quota{1000, 5}},
			{tenant: "fabrikam.com", n: 1, wait: time.Millisecond, want: quota{1000, 5}},
		}, wantTenants: 1},
	}
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			source := &switchable{quotaMap: tt.quotas}
			l := newTenantLimiter(tt.rate, tt.burst, source)
			for i, s := range tt.steps {
				if s.quotas != nil {
					source.quotaMap = s.quotas
				}
				ok, wait, q := l.reserve(s.tenant, s.n, start.Add(s.at))
				if ok != s.ok || (wait-s.wait).Abs() > time.Microsecond || q != s.want {
					t.Fatalf("step %d, %d of %s: ok %v wait %s quota %+v; want %v %s %+v", i, s.n, s.tenant, ok, wait, q, s.ok, s.wait, s.want)
				}
			}
			if got := len(l.tenants()); got != tt.wantTenants {
				t.Fatalf("%d buckets, want %d", got, tt.wantTenants)
			}
		})
	}
}

// switchable is a QuotaSource whose map a test replaces between requests.
type switchable struct{ quotaMap }

func TestTenantQuotaDefaults(t *testing.T) {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	flagged := Flags(fs, "")
	tests := []struct {
		name  string
		cfg   Config
		rate  float64
		burst int
	}{
		{"flags", *flagged, 5000, 20000},
		{"zero Config", Config{}.withDefaults(), 5000, 20000},
		{"set", Config{TenantRate: 100, TenantBurst: 7}.withDefaults(), 100, 7},
		{"no limit", Config{TenantRate: -1}.withDefaults(), -1, 20000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.TenantRate != tt.rate || tt.cfg.TenantBurst != tt.burst {
				t.Fatalf("rate %g burst %d, want %g and %d", tt.cfg.TenantRate, tt.cfg.TenantBurst, tt.rate, tt.burst)
			}
		})
	}
	// The default serves issue 14's deployment (2,000 events/s) twice over,
	// and its burst is the same seconds' worth as a partner's own quota's.
	if DefaultTenantRate < 2*2000 || DefaultTenantBurst != DefaultTenantRate*registry.QuotaBurstSeconds {
		t.Fatalf("default quota %d/s burst %d", DefaultTenantRate, DefaultTenantBurst)
	}
}

// TestTenantQuotaFromRegistry: a quota set in a partner's registration, on
// the relay's NATS, applies to the running relay at the organization's
// next request, is counted and exported, and taking it away brings the
// default back; no restart.
func TestTenantQuotaFromRegistry(t *testing.T) {
	ctx := context.Background()
	r := startRelay(t, Config{TenantRate: 1e6}, false)
	token := r.addPartner(t, "fabrikam.com")
	r.addApp(t, token, registry.App{AppID: "demo", Provider: registry.KindLog}, "phone-1", delivered)
	one := relayproto.Request{Notifications: []relayproto.Notification{notification("n", 1, "demo", "phone-1")}}

	if _, err := r.store.SetQuota(ctx, "fabrikam.com", &registry.Quota{Rate: 0.001, Burst: 3}); err != nil {
		t.Fatal(err)
	}
	var refused reply
	waitFor(t, "fabrikam.com's own quota to hold it back", func() bool {
		refused = r.publish(t, token, one)
		return refused.status == http.StatusTooManyRequests
	})
	if f := refused.fault(t); !f.CanRetry || !strings.Contains(f.Message, "0.001 per second with bursts of 3") {
		t.Fatalf("429 fault %+v", f)
	}
	_, metrics := r.get(t, "/metrics")
	for _, want := range []string{
		`pushproxy_relay_tenant_quota_per_second{tenant="fabrikam.com"} 0.001`,
		`pushproxy_relay_tenant_quota_burst{tenant="fabrikam.com"} 3`,
		`pushproxy_relay_tenant_notifications_total{result="held_back",tenant="fabrikam.com"} 1`,
		`pushproxy_relay_tenant_notifications_total{result="accepted",tenant="fabrikam.com"}`,
		`pushproxy_relay_rate_limited_total{tenant="fabrikam.com"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Taken away: the relay's default (--tenant-rate) applies again.
	if _, err := r.store.SetQuota(ctx, "fabrikam.com", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the default quota back", func() bool { return r.publish(t, token, one).status == http.StatusOK })
	if _, metrics := r.get(t, "/metrics"); !strings.Contains(metrics, `pushproxy_relay_tenant_quota_per_second{tenant="fabrikam.com"} 1e+06`) {
		t.Fatalf("the quota gauge does not show the default again:\n%s", metrics)
	}
}
