//go:build unix

package benchtest

import (
	"syscall"
	"time"
)

// CPUTime is the CPU time (user and system) this process used so far; 0
// when it cannot be read.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
