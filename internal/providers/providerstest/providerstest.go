// Package providerstest holds what the tests of the push providers share:
// the check of a provider's answer table. Nothing here is fit for
// production.
package providerstest

import (
	"fmt"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/providers"
)

// Answer is an answer of a push service, its HTTP status and reason code,
// and what providers.Classify must make of it: the class Want and, for a
// transient answer, the least wait Least (MinRetryAfter).
type Answer struct {
	Status int
	Reason string
	Want   providers.Class
	Least  time.Duration
}

// CheckAnswers classifies each answer with table, in a subtest of its own,
// and checks that every row of table covers at least one of them.
func CheckAnswers(t *testing.T, table []providers.Rule, answers []Answer) {
	t.Helper()
	covered := map[int]bool{}
	for _, a := range answers {
		t.Run(fmt.Sprintf("%d %s", a.Status, a.Reason), func(t *testing.T) {
			covered[providers.RuleIndex(table, a.Status, a.Reason)] = true
			r := providers.Classify(table, a.Status, a.Reason)
			if r.Class != a.Want || r.MinRetryAfter != a.Least {
				t.Errorf("Classify(%d, %q) = %s (at least %s), want %s (at least %s)", a.Status, a.Reason, r.Class, r.MinRetryAfter, a.Want, a.Least)
			}
		})
	}
	for i := range table {
		if !covered[i] {
			t.Errorf("row %d of the answer table (%+v) has no test case", i, table[i])
		}
	}
}
