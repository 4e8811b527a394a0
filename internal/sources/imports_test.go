package sources_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSourcesDoNotImportIngest checks the direction of the imports: ingest
// wires the sources in, so no source may import ingest (or an engine).
func TestSourcesDoNotImportIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/pushproxy/pushproxy/internal/sources/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, engine := range []string{"ingest", "dispatcher", "relay", "delivery", "monitor"} {
			if dep == "github.com/pushproxy/pushproxy/internal/"+engine {
				t.Errorf("a source imports the engine internal/%s", engine)
			}
		}
	}
}
