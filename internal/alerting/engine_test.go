package alerting

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// clock is a manual clock for the engine.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

// step is one action of a scenario: advance the clock, then either observe
// a signal or evaluate, and check the transitions that came out ("" for
// none, otherwise "firing" or "resolved").
type step struct {
	after    time.Duration
	signal   *Signal
	want     string
	wantDesc string
}

func occur(rule string) *Signal { return &Signal{Rule: rule} }
func fail(rule string) *Signal  { return &Signal{Rule: rule, Failing: true} }
func pass(rule string) *Signal  { return &Signal{Rule: rule} }

func TestEngineScenarios(t *testing.T) {
	rate := Rule{Name: "Rate", Severity: SeverityWarning, Kind: KindRate, Threshold: 3, Window: time.Minute, CoolDown: 2 * time.Minute, Summary: "rate"}
	single := Rule{Name: "Single", Severity: SeverityWarning, Kind: KindRate, Threshold: 1, Window: time.Minute, CoolDown: time.Minute, Summary: "single"}
	state := Rule{Name: "State", Severity: SeverityCritical, Kind: KindState, Threshold: 2, CoolDown: 0, Summary: "state"}
	sticky := Rule{Name: "Sticky", Severity: SeverityCritical, Kind: KindState, Threshold: 1, CoolDown: 5 * time.Minute, Summary: "sticky"}

	tests := []struct {
		name  string
		rule  Rule
		steps []step
	}{
		{"rate below threshold never fires", rate, []step{
			{signal: occur("Rate")}, {after: 40 * time.Second, signal: occur("Rate")},
			{after: 30 * time.Second, signal: occur("Rate")}, // the first left the window
			{after: 10 * time.Minute},
		}},
		{"rate at threshold fires once, then resolves after window and cool-down", rate, []step{
			{signal: occur("Rate")}, {signal: occur("Rate")}, {signal: occur("Rate"), want: "firing"},
			{after: time.Second, signal: occur("Rate")},
			{after: time.Second, signal: occur("Rate")},
			// The count drops below 3 once the third-to-last occurrence
			// leaves the window: at t=1m; resolved at 1m + 2m cool-down.
			{after: 2*time.Minute + 57*time.Second},
			{after: time.Second, want: "resolved"},
			{after: time.Hour},
		}},
		{"a burst counts as one occurrence with its count", rate, []step{
			{signal: &Signal{Rule: "Rate", Count: 50, Detail: "50 at once"}, want: "firing", wantDesc: "50 at once"},
			{after: 3*time.Minute - time.Second},
			{after: time.Second, want: "resolved", wantDesc: "50 at once"},
		}},
		{"trickle during cool-down keeps one incident", single, []step{
			{signal: occur("Single"), want: "firing"},
			{after: 90 * time.Second, signal: occur("Single")},
			{after: 90 * time.Second, signal: occur("Single")},
			{after: 90 * time.Second},
			{after: 29 * time.Second},
			{after: time.Second, want: "resolved"},
			{after: time.Second, signal: occur("Single"), want: "firing"},
		}},
		{"state fires after consecutive failures and resolves on a pass", state, []step{
			{signal: fail("State")}, {signal: pass("State")}, {signal: fail("State")},
			{signal: fail("State"), want: "firing"},
			{signal: fail("State")},
			{after: time.Minute, signal: pass("State"), want: "resolved"},
			{signal: pass("State")},
			{signal: fail("State")},
		}},
		{"state with a cool-down waits for it after the pass", sticky, []step{
			{signal: fail("Sticky"), want: "firing"},
			{after: time.Minute, signal: pass("Sticky")},
			{after: 4 * time.Minute, signal: pass("Sticky")},
			{after: 30 * time.Second, signal: fail("Sticky")}, // back to failing: same incident
			{after: time.Second, signal: pass("Sticky")},
			{after: 5*time.Minute - time.Second},
			{after: time.Second, want: "resolved"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			e, err := NewEngine([]Rule{tt.rule}, c.now)
			if err != nil {
				t.Fatal(err)
			}
			var startedAt time.Time
			for i, s := range tt.steps {
				c.advance(s.after)
				var got []Alert
				if s.signal != nil {
					got, err = e.Observe(*s.signal)
					if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
				} else {
					got = e.Evaluate()
				}
				if s.want == "" {
					if len(got) != 0 {
						t.Fatalf("step %d at %s: got %s, want nothing", i, c.t.Format(time.TimeOnly), got[0].Status())
					}
					continue
				}
				if len(got) != 1 || got[0].Status() != s.want {
					t.Fatalf("step %d at %s: got %v, want one %s", i, c.t.Format(time.TimeOnly), got, s.want)
				}
				a := got[0]
				if s.wantDesc != "" && a.Annotations[AnnotationDescription] != s.wantDesc {
					t.Errorf("step %d: description %q, want %q", i, a.Annotations[AnnotationDescription], s.wantDesc)
				}
				if a.Name() != tt.rule.Name || a.Severity() != tt.rule.Severity || a.Labels[LabelService] != ServiceName {
					t.Errorf("step %d: labels %v", i, a.Labels)
				}
				switch s.want {
				case "firing":
					startedAt = c.t
					if !a.StartsAt.Equal(c.t) || !a.EndsAt.IsZero() {
						t.Errorf("step %d: firing alert starts %s ends %s", i, a.StartsAt, a.EndsAt)
					}
				case "resolved":
					if !a.StartsAt.Equal(startedAt) || !a.EndsAt.Equal(c.t) {
						t.Errorf("step %d: resolved alert starts %s (want %s) ends %s (want %s)", i, a.StartsAt, startedAt, a.EndsAt, c.t)
					}
				}
			}
		})
	}
}

func TestEngineSeparatesIncidentsByLabels(t *testing.T) {
	c := newClock()
	rules := DefaultRules()
	e, err := NewEngine(rules, c.now)
	if err != nil {
		t.Fatal(err)
	}
	current := map[string]string{"certificate": "current"}
	next := map[string]string{"certificate": "next"}
	for _, labels := range []map[string]string{current, next} {
		got, err := e.Observe(Signal{Rule: RuleCertificateExpiring, Labels: labels, Failing: true, Detail: "expires soon"})
		if err != nil || len(got) != 1 || got[0].Labels["certificate"] != labels["certificate"] {
			t.Fatalf("observe %v: %v %v", labels, got, err)
		}
	}
	if got, _ := e.Observe(Signal{Rule: RuleCertificateExpiring, Labels: current, Failing: true}); len(got) != 0 {
		t.Fatalf("repeat failure raised %v", got)
	}
	active := e.Active()
	if len(active) != 2 || active[0].Fingerprint == active[1].Fingerprint {
		t.Fatalf("active = %+v", active)
	}
	got, _ := e.Observe(Signal{Rule: RuleCertificateExpiring, Labels: current})
	if len(got) != 1 || !got[0].Resolved() || got[0].Labels["certificate"] != "current" || got[0].Occurrences != 2 {
		t.Fatalf("resolve current: %+v", got)
	}
	if len(e.Active()) != 1 {
		t.Fatalf("active after resolving one: %v", e.Active())
	}
}

func TestEngineErrors(t *testing.T) {
	good := Rule{Name: "Good", Severity: SeverityInfo, Kind: KindState, Threshold: 1}
	tests := []struct {
		name  string
		rules []Rule
		want  string
	}{
		{"empty name", []Rule{{Severity: SeverityInfo, Kind: KindState, Threshold: 1}}, "name"},
		{"bad severity", []Rule{{Name: "A", Severity: "loud", Kind: KindState, Threshold: 1}}, "severity"},
		{"zero threshold", []Rule{{Name: "A", Severity: SeverityInfo, Kind: KindState}}, "threshold"},
		{"rate without window", []Rule{{Name: "A", Severity: SeverityInfo, Kind: KindRate, Threshold: 1}}, "window"},
		{"negative cool-down", []Rule{{Name: "A", Severity: SeverityInfo, Kind: KindState, Threshold: 1, CoolDown: -1}}, "cool-down"},
		{"duplicate", []Rule{good, good}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewEngine(tt.rules, nil)
			if !errors.Is(err, ErrInvalidRule) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalidRule mentioning %q", err, tt.want)
			}
		})
	}
	e, err := NewEngine([]Rule{good}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Observe(Signal{Rule: "Nope"}); !errors.Is(err, ErrUnknownRule) {
		t.Fatalf("unknown rule: %v", err)
	}
}

func TestDefaultRulesAreValid(t *testing.T) {
	if _, err := NewEngine(DefaultRules(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestFingerprintIsStable(t *testing.T) {
	a := Fingerprint(map[string]string{"a": "1", "b": "2"})
	b := Fingerprint(map[string]string{"b": "2", "a": "1"})
	c := Fingerprint(map[string]string{"a": "12"})
	if a != b || a == c || len(a) != 16 {
		t.Fatalf("fingerprints %s %s %s", a, b, c)
	}
}

// TestEngineEvaluateIsCadenceIndependent checks that resolving does not
// depend on how often Evaluate runs.
func TestEngineEvaluateIsCadenceIndependent(t *testing.T) {
	rule := Rule{Name: "R", Severity: SeverityWarning, Kind: KindRate, Threshold: 2, Window: time.Minute, CoolDown: time.Minute}
	for _, every := range []time.Duration{time.Second, 7 * time.Second, 30 * time.Second} {
		t.Run(fmt.Sprint(every), func(t *testing.T) {
			c := newClock()
			e, _ := NewEngine([]Rule{rule}, c.now)
			start := c.t
			e.Observe(Signal{Rule: "R"})
			e.Observe(Signal{Rule: "R"})
			var resolvedAt time.Time
			for resolvedAt.IsZero() && c.t.Sub(start) < time.Hour {
				c.advance(every)
				if got := e.Evaluate(); len(got) == 1 {
					resolvedAt = got[0].EndsAt
				}
			}
			// Cleared at 1m, resolvable from 2m: the first evaluation at or after 2m.
			earliest := start.Add(2 * time.Minute)
			if resolvedAt.Before(earliest) || resolvedAt.Sub(earliest) >= every {
				t.Fatalf("resolved at +%s, want the first tick at or after +2m", resolvedAt.Sub(start))
			}
		})
	}
}
