package benchtest

import "time"

// Percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted,
// or 0 without values.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*q+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}
