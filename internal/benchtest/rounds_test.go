package benchtest

import (
	"testing"
	"time"
)

func TestRoundsMedian(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name      string
		took, cpu []time.Duration
		wantTook  time.Duration
		wantCPU   time.Duration
	}{
		{"none", nil, nil, 0, 0},
		{"one stalled round of five does not count", []time.Duration{400 * ms, 30 * time.Second, 420 * ms, 410 * ms, 390 * ms}, []time.Duration{600 * ms, 700 * ms, 610 * ms, 620 * ms, 590 * ms}, 410 * ms, 610 * ms},
		{"an even count takes the mean of the middles", []time.Duration{4 * ms, 1 * ms, 2 * ms, 3 * ms}, nil, 2500 * time.Microsecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Rounds
			for i, took := range tc.took {
				var cpu time.Duration
				if i < len(tc.cpu) {
					cpu = tc.cpu[i]
				}
				r.Add(took, cpu)
			}
			if got := r.Took(); got != tc.wantTook {
				t.Errorf("took %s, want %s", got, tc.wantTook)
			}
			if got := r.CPU(); got != tc.wantCPU {
				t.Errorf("cpu %s, want %s", got, tc.wantCPU)
			}
		})
	}
}
