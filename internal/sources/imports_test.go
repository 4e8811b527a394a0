package sources_test

import (
	"testing"

	"github.com/pushproxy/pushproxy/internal/golist"
)

// TestSourcesDoNotImportIngest checks the direction of the imports: ingest
// wires the sources in, so no source may import ingest (or an engine).
func TestSourcesDoNotImportIngest(t *testing.T) {
	for _, dep := range golist.Deps(t, golist.Module+"/internal/sources/...") {
		for _, engine := range []string{"ingest", "dispatcher", "relay", "delivery", "monitor"} {
			if dep == golist.Module+"/internal/"+engine {
				t.Errorf("a source imports the engine internal/%s", engine)
			}
		}
	}
}
