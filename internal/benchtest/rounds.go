package benchtest

import (
	"slices"
	"testing"
	"time"
)

// Rounds are the wall and CPU times of the rounds of one kind of a
// benchmark. A benchmark alternating kinds (pushproxy, its anchor)
// reports each kind's median round: in a sum, one round in which the
// machine paused, or a pull consumer waited out its request's expiry,
// decides the ratio (a dispatcher measured at 986 % of raw consuming
// once, when one raw round of 40,000 events took 30 s).
type Rounds struct {
	took, cpu []time.Duration
}

// Add records one round; cpu is 0 when the round did not measure it.
func (r *Rounds) Add(took, cpu time.Duration) {
	r.took = append(r.took, took)
	if cpu > 0 {
		r.cpu = append(r.cpu, cpu)
	}
}

// Took is the median round's wall time, 0 without rounds.
func (r *Rounds) Took() time.Duration { return median(r.took) }

// CPU is the median round's CPU time, 0 when no round measured it.
func (r *Rounds) CPU() time.Duration { return median(r.cpu) }

// Report adds to b, for rounds of n units each (unit "event" or
// "notification"), prefix<unit>s/s from the median wall time and, when
// measured, prefix+cpu-µs/<unit> from the median CPU time.
func (r *Rounds) Report(b *testing.B, prefix, unit string, n int) {
	if took := r.Took(); took > 0 {
		b.ReportMetric(float64(n)/took.Seconds(), prefix+unit+"s/s")
	}
	if cpu := r.CPU(); cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), prefix+"cpu-µs/"+unit)
	}
}

// median is the middle of ds (the mean of the two middles of an even
// count), 0 when empty.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}
