package badges_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPure checks that the ledger imports nothing that does I/O or keeps
// time itself: no NATS client, no network, no files; of the project, only
// the pure coalescer and the contracts (events, unread states, pushlog
// reasons). A grep of its source for the clock does the rest.
func TestPure(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-f", "{{join .Imports \" \"}}", "github.com/pushproxy/pushproxy/internal/dispatcher/badges").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{"slices": true, "sort": true, "time": true,
		"github.com/pushproxy/pushproxy/internal/coalesce": true, "github.com/pushproxy/pushproxy/internal/events": true,
		"github.com/pushproxy/pushproxy/internal/unread": true, "github.com/pushproxy/pushproxy/internal/pushlog": true}
	for _, imp := range strings.Fields(string(out)) {
		if !allowed[imp] {
			t.Errorf("badges imports %s; the ledger must stay pure (no I/O, no clock of its own)", imp)
		}
	}
	src, err := exec.Command("grep", "-n", `time\.Now\|time\.Since\|time\.After\|time\.Sleep`, "badges.go").CombinedOutput()
	if len(src) > 0 || err == nil {
		t.Errorf("badges.go reads the clock:\n%s", src)
	}
}
