package pushlog_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestReadersDoNotImportEngines checks that the packages that read push
// records get them from pushlog, not from an engine.
func TestReadersDoNotImportEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	readers := []string{"monitor", "deadletter", "replay", "probe", "delivery", "pushlog"}
	engines := []string{"github.com/pushproxy/pushproxy/internal/dispatcher"}
	for _, r := range readers {
		out, err := exec.Command("go", "list", "-deps", "github.com/pushproxy/pushproxy/internal/"+r).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", r, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, e := range engines {
				if dep == e {
					t.Errorf("internal/%s imports the engine %s", r, e)
				}
			}
		}
	}
}
