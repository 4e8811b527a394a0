package ingest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/events"
)

func TestTenantCounter(t *testing.T) {
	c := tenantCounter{max: 2, seen: map[string]prometheus.Counter{},
		vec: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_tenant_events_total", Help: "test"}, []string{"tenant"})}
	evs := []events.Event{{Tenant: "a.com"}, {Tenant: "a.com"}, {Tenant: "b.com"}, {Tenant: "a.com"}, {Tenant: "c.com"}, {Tenant: "d.com"}}
	acks := []Ack{{}, {Duplicate: true}, {}, {}, {}, {}}
	c.stored(evs, acks)
	want := map[string]float64{"a.com": 2, "b.com": 1, "other": 2}
	for tenant, n := range want {
		if got := testutil.ToFloat64(c.vec.WithLabelValues(tenant)); got != n {
			t.Errorf("tenant %s: %v events, want %v", tenant, got, n)
		}
	}
	if got := testutil.CollectAndCount(c.vec); got != 3 {
		t.Errorf("%d tenant labels, want 3 (two tenants and other)", got)
	}
}
