package benchtest

import (
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
)

// ProfilesEnv names the folder where benchmarks save CPU profiles of the
// windows they measure (unset: none is taken).
const ProfilesEnv = "PUSHPROXY_BENCH_PROFILES"

// ProfileWindow starts a CPU profile of this process into
// <$PUSHPROXY_BENCH_PROFILES>/<name>.pprof, when the variable is set, and
// returns the function that stops it: a profile of the measured window
// alone, without the set-up that -test.cpuprofile takes in too.
func ProfileWindow(b testing.TB, name string) (stop func()) {
	dir := os.Getenv(ProfilesEnv)
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatalf("creating the profiles folder: %v", err)
	}
	file := filepath.Join(dir, name+".pprof")
	f, err := os.Create(file)
	if err != nil {
		b.Fatalf("creating the profile: %v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("starting the profile %s: %v", file, err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Errorf("saving the profile %s: %v", file, err)
		}
		b.Logf("CPU profile of the window: %s", file)
	}
}
