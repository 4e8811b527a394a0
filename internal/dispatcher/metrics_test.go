package dispatcher

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pushproxy/pushproxy/internal/coalesce"
)

// TestLatencyBucketsTellTheGoal checks that the latency histograms have
// bucket bounds at the default coalescing window and at its latency goal
// (the window + 50 ms), so that a dashboard's p99 says whether pushes go
// out at the window or later. A new default window needs new bounds.
func TestLatencyBucketsTellTheGoal(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.eventToPush.Observe(0)
	m.eventAge.Observe(0)
	m.pushLatency.Observe(0)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{coalesce.DefaultWindow.Seconds(), (coalesce.DefaultWindow + 50*time.Millisecond).Seconds()}
	for _, name := range []string{"pushproxy_dispatcher_event_to_push_seconds", "pushproxy_dispatcher_event_age_seconds", "pushproxy_dispatcher_push_duration_seconds"} {
		i := slices.IndexFunc(families, func(f *dto.MetricFamily) bool { return f.GetName() == name })
		if i < 0 {
			t.Fatalf("%s is not registered", name)
		}
		var bounds []float64
		for _, b := range families[i].GetMetric()[0].GetHistogram().GetBucket() {
			bounds = append(bounds, b.GetUpperBound())
		}
		for _, w := range want {
			if !slices.Contains(bounds, w) {
				t.Errorf("%s has no bucket bound at %gs: %v", name, w, bounds)
			}
		}
	}
}
