package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCoverLatencies(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	badges := map[string][]badge{
		"a": {{Count: 1, At: ms(300)}, {Count: 3, At: ms(700)}},
		"b": {{Count: 2, At: ms(350)}},
	}
	tests := []struct {
		name        string
		evs         []sentEvent
		want        []time.Duration
		wantMissing int
		wantLast    time.Time
	}{
		{"covered by its own count", []sentEvent{{device: "a", count: 1, at: ms(0)}}, []time.Duration{300 * time.Millisecond}, 0, ms(300)},
		{"covered by a later, higher count", []sentEvent{{device: "a", count: 2, at: ms(100)}}, []time.Duration{600 * time.Millisecond}, 0, ms(700)},
		{"not covered", []sentEvent{{device: "b", count: 3, at: ms(0)}, {device: "c", count: 1, at: ms(0)}}, []time.Duration{}, 2, time.Time{}},
		{"sorted", []sentEvent{{device: "a", count: 3, at: ms(600)}, {device: "b", count: 2, at: ms(0)}}, []time.Duration{100 * time.Millisecond, 350 * time.Millisecond}, 0, ms(700)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lat, missing, last := coverLatencies(tt.evs, badges)
			if !slices.Equal(lat, tt.want) || missing != tt.wantMissing || !last.Equal(tt.wantLast) {
				t.Fatalf("coverLatencies = %v, %d missing, last %v; want %v, %d, %v", lat, missing, last, tt.want, tt.wantMissing, tt.wantLast)
			}
		})
	}
}

func TestEnvInts(t *testing.T) {
	tests := []struct {
		value   string
		want    []int
		wantErr bool
	}{
		{"", []int{7}, false},
		{"1000, 2000,4000", []int{1000, 2000, 4000}, false},
		{"1000,x", nil, true},
		{"0", nil, true},
	}
	for _, tt := range tests {
		t.Setenv("PUSHPROXY_TEST_INTS", tt.value)
		got, err := envInts("PUSHPROXY_TEST_INTS", []int{7})
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("envInts(%q) = %v, %v; want %v (error %v)", tt.value, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestLatencyReportRatio(t *testing.T) {
	// row is a rate held with every latency p99 (the goal is 350 ms), or
	// not held.
	row := func(rate int, p99 time.Duration, held bool) latencyRow {
		r := latencyRow{rate: rate, events: rate, achieved: float64(rate), pushes: rate, lat: []time.Duration{p99}}
		if !held {
			r.missing = 1
		}
		return r
	}
	tests := []struct {
		name      string
		rows, raw []latencyRow
		want      string
	}{
		{"the goal met at 2,000 of 8,000",
			[]latencyRow{row(1000, 300*time.Millisecond, true), row(2000, 340*time.Millisecond, true), row(4000, 900*time.Millisecond, true)},
			[]latencyRow{row(4000, 10*time.Millisecond, true), row(8000, 20*time.Millisecond, true), row(10000, time.Second, false)},
			"highest rate within the goal: 2000 events/s; the raw chain held 8000 events/s; ratio 25%"},
		{"the raw chain held its last rate",
			[]latencyRow{row(2000, 340*time.Millisecond, true)},
			[]latencyRow{row(4000, 10*time.Millisecond, true)},
			"the raw chain held 4000 events/s (its highest rate offered: it may hold more); ratio 50%"},
		{"the goal never met",
			[]latencyRow{row(1000, 400*time.Millisecond, true)},
			[]latencyRow{row(4000, 10*time.Millisecond, true)},
			"highest rate within the goal: none; the raw chain held 4000 events/s"},
		{"the raw chain held nothing",
			[]latencyRow{row(1000, 300*time.Millisecond, true)},
			[]latencyRow{row(4000, 10*time.Millisecond, false)},
			"the raw chain held none of its rates: no ratio"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := latencyReport(100, tt.rows, tt.raw)
			if !strings.Contains(got, tt.want) {
				t.Fatalf("the report lacks %q:\n%s", tt.want, got)
			}
		})
	}
	if got := latencyReport(100, []latencyRow{row(1000, 300*time.Millisecond, true)}, nil); strings.Contains(got, "raw chain") {
		t.Errorf("a report without the anchor speaks of it:\n%s", got)
	}
}
