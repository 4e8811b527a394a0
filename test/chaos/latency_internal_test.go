package chaos

import (
	"slices"
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
