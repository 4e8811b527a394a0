//go:build !unix

package dispatcher_test

import "time"

// cpuTime is not measured here; benchmarks leave out CPU per event.
func cpuTime() time.Duration { return 0 }
