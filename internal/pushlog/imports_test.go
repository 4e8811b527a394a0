package pushlog_test

import (
	"testing"

	"github.com/pushproxy/pushproxy/internal/golist"
)

// TestReadersDoNotImportEngines checks that the packages that read push
// records get them from pushlog, not from an engine.
func TestReadersDoNotImportEngines(t *testing.T) {
	readers := []string{"monitor", "deadletter", "replay", "probe", "delivery", "pushlog"}
	engines := []string{golist.Module + "/internal/dispatcher"}
	for _, r := range readers {
		for _, dep := range golist.Deps(t, golist.Module+"/internal/"+r) {
			for _, e := range engines {
				if dep == e {
					t.Errorf("internal/%s imports the engine %s", r, e)
				}
			}
		}
	}
}
