package ingest

import (
	"slices"
	"testing"
	"time"

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

func TestActivityIsBounded(t *testing.T) {
	a := newActivity(2)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	evs := []events.Event{{Tenant: "a.example"}, {Tenant: "b.example"}, {Tenant: "c.example"}, {Tenant: "d.example"}, {Tenant: "a.example"}}
	acks := []Ack{{}, {}, {}, {}, {Duplicate: true}}
	a.stored(events.SourceNative, evs, acks, at)
	a.stored(events.SourceGraph, evs[:1], acks[:1], at.Add(time.Second))
	want := []SourceActivity{
		{Source: events.SourceGraph, Tenant: "a.example", Events: 1, LastEvent: at.Add(time.Second)},
		{Source: events.SourceNative, Tenant: "a.example", Events: 1, LastEvent: at},
		{Source: events.SourceNative, Tenant: "b.example", Events: 1, LastEvent: at},
		{Source: events.SourceNative, Tenant: "other", Events: 2, LastEvent: at},
	}
	if got := a.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("activity\n got %+v\nwant %+v", got, want)
	}
	if got := testutil.ToFloat64(a.last.WithLabelValues(string(events.SourceGraph))); got != float64(at.Add(time.Second).Unix()) {
		t.Fatalf("last event gauge %v", got)
	}
}
