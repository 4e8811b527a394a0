//go:build !unix

package benchtest

import "time"

// CPUTime is not measured on this system: 0, and benchmarks leave out CPU
// per event.
func CPUTime() time.Duration { return 0 }
