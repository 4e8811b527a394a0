package badges_test

import (
	"os/exec"
	"testing"

	"github.com/pushproxy/pushproxy/internal/golist"
)

// TestPure checks that the ledger imports nothing that does I/O or keeps
// time itself: no NATS client, no network, no files; of the project, only
// the pure coalescer and the contracts (events, unread states, pushlog
// reasons). A grep of its source for the clock does the rest.
func TestPure(t *testing.T) {
	allowed := map[string]bool{"slices": true, "sort": true, "time": true,
		golist.Module + "/internal/coalesce": true, golist.Module + "/internal/events": true,
		golist.Module + "/internal/unread": true, golist.Module + "/internal/pushlog": true}
	for _, imp := range golist.Imports(t, golist.Module+"/internal/dispatcher/badges") {
		if !allowed[imp] {
			t.Errorf("badges imports %s; the ledger must stay pure (no I/O, no clock of its own)", imp)
		}
	}
	src, err := exec.Command("grep", "-n", `time\.Now\|time\.Since\|time\.After\|time\.Sleep`, "badges.go").CombinedOutput()
	if len(src) > 0 || err == nil {
		t.Errorf("badges.go reads the clock:\n%s", src)
	}
}
