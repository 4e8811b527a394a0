package alerting

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEveryAlertHasARunbook checks that docs/runbooks.md has a section for
// every alert the monitor raises and every Prometheus rule, each rule
// carries a component label and a runbook_url to its section, and the
// monitor's alerts link to theirs.
func TestEveryAlertHasARunbook(t *testing.T) {
	read := func(parts ...string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(append([]string{"..", ".."}, parts...)...))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	sections := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)$`).FindAllStringSubmatch(read("docs", "runbooks.md"), -1) {
		sections[strings.ToLower(m[1])] = true
	}
	var names []string
	for _, r := range DefaultRules() {
		names = append(names, r.Name)
	}
	rules := read("deploy", "prometheus", "alerts.yaml")
	blocks := strings.Split(rules, "\n      - alert: ")[1:]
	if len(blocks) < 20 {
		t.Fatalf("found %d rules in alerts.yaml; the parsing is wrong", len(blocks))
	}
	for _, b := range blocks {
		name := strings.TrimSpace(strings.SplitN(b, "\n", 2)[0])
		names = append(names, name)
		if !strings.Contains(b, "\n          component: ") {
			t.Errorf("rule %s has no component label", name)
		}
		if !strings.Contains(b, `runbook_url: "`+RunbookBase+strings.ToLower(name)+`"`) {
			t.Errorf("rule %s has no runbook_url to its section", name)
		}
	}
	for _, n := range names {
		if !sections[strings.ToLower(n)] {
			t.Errorf("docs/runbooks.md has no section ## %s", n)
		}
	}
	e, err := NewEngine(DefaultRules(), nil)
	if err != nil {
		t.Fatal(err)
	}
	alerts, err := e.Observe(Signal{Rule: RuleDeadLetters, Failing: true})
	if err != nil || len(alerts) != 1 {
		t.Fatalf("observe: %v %v", alerts, err)
	}
	a := alerts[0]
	if a.Annotations[AnnotationRunbookURL] != RunbookBase+"pushdeadletters" || a.Labels[LabelComponent] != ComponentName {
		t.Fatalf("alert %+v lacks its runbook_url or component", a)
	}
}
