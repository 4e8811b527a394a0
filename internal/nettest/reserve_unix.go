//go:build unix

package nettest

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// reserve claims port for this process among the processes of the machine
// that choose their ports here (tests, benchmarks): an exclusive lock on a
// file named after the port in a folder of the temporary folder. The lock
// is held until release, or until the process ends however it ends (the
// kernel drops it with the descriptor), so a port stays this process's
// while nothing listens on it, as when a test cluster's node is restarted
// on it. ok is false when another process, or another call of this one,
// holds the port. Without the folder, nothing is reserved and ok is true:
// the listen check alone decides, as before reservations.
func reserve(port int) (release func(), ok bool) {
	dir := filepath.Join(os.TempDir(), "pushproxy-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return func() {}, true
	}
	// A raw descriptor, not an *os.File: nothing closes it behind our back
	// (an *os.File's finalizer would, and drop the lock).
	fd, err := syscall.Open(filepath.Join(dir, strconv.Itoa(port)), syscall.O_RDONLY|syscall.O_CREAT|syscall.O_CLOEXEC, 0o666)
	if err != nil {
		return func() {}, true
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = syscall.Close(fd)
		return nil, false
	}
	return func() { _ = syscall.Close(fd) }, true
}
