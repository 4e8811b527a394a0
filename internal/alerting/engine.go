// Package alerting turns what the monitor observes (dead letters, captured
// advisories, probe and canary results, certificate expiry, pruned device
// subscriptions) into alerts, one per incident, and delivers them to sinks:
// the log, NATS subjects monitor.alerts.<severity> and the Prometheus
// Alertmanager v2 API.
//
// The rule engine ([Engine]) is pure: it takes time from an injected clock,
// does no I/O and returns the alerts that changed state. A rule fires when
// its condition holds (a number of occurrences within a time window, or a
// number of consecutive failed checks) and is resolved once the condition
// has stayed clear for the rule's cool-down. While an incident lasts, more
// occurrences do not raise more alerts: one incident is one firing alert and
// one resolved notice. [Manager] wraps an Engine for concurrent use and
// sends its transitions to the sinks.
package alerting

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Severity says how urgent an alert is. It is the alert's "severity" label
// and the last token of its NATS subject.
type Severity string

// Severities, from most to least urgent.
const (
	SeverityCritical Severity = "critical"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// Valid reports whether s is a known severity.
func (s Severity) Valid() bool {
	return s == SeverityCritical || s == SeverityWarning || s == SeverityInfo
}

// Kind is how a rule decides that its condition holds.
type Kind int

const (
	// KindRate counts occurrences: the condition holds while at least
	// Threshold occurrences fall within the last Window.
	KindRate Kind = iota
	// KindState follows a check that passes or fails: the condition holds
	// from the Threshold-th consecutive failure until the next pass.
	KindState
)

// String is "rate" or "state".
func (k Kind) String() string {
	switch k {
	case KindRate:
		return "rate"
	case KindState:
		return "state"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Rule is one alerting rule.
type Rule struct {
	// Name is the alert's name (its "alertname" label), e.g. "PushDeadLetters".
	Name string
	// Severity is the alert's "severity" label.
	Severity Severity
	// Kind says how the condition is computed.
	Kind Kind
	// Threshold is the number of occurrences within Window (KindRate) or of
	// consecutive failures (KindState) at which the rule fires. At least 1.
	Threshold int
	// Window is the sliding window of a KindRate rule.
	Window time.Duration
	// CoolDown is how long the condition must stay clear before the
	// incident is resolved. It keeps a flapping condition one incident.
	CoolDown time.Duration
	// Summary is the alert's "summary" annotation: what is wrong.
	Summary string
	// Runbook is the alert's "runbook" annotation: what the operator
	// should do. Optional.
	Runbook string
}

// Validate reports a rule that cannot work.
func (r Rule) Validate() error {
	switch {
	case r.Name == "" || strings.ContainsAny(r.Name, " \t\n."):
		return fmt.Errorf("%w: name %q must be a non-empty word", ErrInvalidRule, r.Name)
	case !r.Severity.Valid():
		return fmt.Errorf("%w: rule %s: unknown severity %q", ErrInvalidRule, r.Name, r.Severity)
	case r.Kind != KindRate && r.Kind != KindState:
		return fmt.Errorf("%w: rule %s: unknown kind %s", ErrInvalidRule, r.Name, r.Kind)
	case r.Threshold < 1:
		return fmt.Errorf("%w: rule %s: threshold must be at least 1", ErrInvalidRule, r.Name)
	case r.Kind == KindRate && r.Window <= 0:
		return fmt.Errorf("%w: rule %s: a rate rule needs a positive window", ErrInvalidRule, r.Name)
	case r.CoolDown < 0:
		return fmt.Errorf("%w: rule %s: negative cool-down", ErrInvalidRule, r.Name)
	}
	return nil
}

// Errors of the engine.
var (
	// ErrInvalidRule is wrapped by every error about a bad rule.
	ErrInvalidRule = errors.New("invalid alerting rule")
	// ErrUnknownRule is returned for a signal that names no rule.
	ErrUnknownRule = errors.New("unknown alerting rule")
)

// Signal is one observation fed to the engine.
type Signal struct {
	// Rule names the rule the signal is for.
	Rule string
	// Labels tell incidents of one rule apart, e.g. {"certificate":
	// "current"}. Signals with the same labels belong to the same incident.
	Labels map[string]string
	// Failing is, for a KindState rule, whether the check failed. A
	// KindRate rule ignores it: every signal is an occurrence.
	Failing bool
	// Count is the number of occurrences a KindRate signal stands for;
	// 0 means 1.
	Count int
	// Detail describes the latest observation for the operator; it becomes
	// the alert's "description" annotation.
	Detail string
}

// Alert is the state of one incident as sinks see it.
type Alert struct {
	// Labels identify the incident: alertname, severity and the signal's labels.
	Labels map[string]string
	// Annotations describe it: summary, description and runbook.
	Annotations map[string]string
	// StartsAt is when the rule fired.
	StartsAt time.Time
	// EndsAt is when the incident was resolved; zero while it is firing.
	EndsAt time.Time
	// Fingerprint is a stable hash of the labels.
	Fingerprint string
	// Occurrences counts the occurrences (KindRate) or failures
	// (KindState) seen during the incident so far.
	Occurrences int
}

// Name is the alert's alertname label.
func (a Alert) Name() string { return a.Labels[LabelAlertName] }

// Severity is the alert's severity label.
func (a Alert) Severity() Severity { return Severity(a.Labels[LabelSeverity]) }

// Resolved reports whether the incident has ended.
func (a Alert) Resolved() bool { return !a.EndsAt.IsZero() }

// Status is "firing" or "resolved".
func (a Alert) Status() string {
	if a.Resolved() {
		return "resolved"
	}
	return "firing"
}

// Well-known label and annotation names.
const (
	LabelAlertName        = "alertname"
	LabelSeverity         = "severity"
	LabelService          = "service"
	AnnotationSummary     = "summary"
	AnnotationDescription = "description"
	AnnotationRunbook     = "runbook"
	AnnotationRunbookURL  = "runbook_url"
	LabelComponent        = "component"
	// ServiceName is the value of every alert's "service" label.
	ServiceName = "pushproxy"
	// ComponentName is the value of every alert's "component" label: the
	// monitor raises them.
	ComponentName = "monitor"
	// RunbookBase is where the runbooks are: each alert's runbook_url is
	// RunbookBase followed by its lower-cased name, the anchor of its
	// section in docs/runbooks.md.
	RunbookBase = "https://github.com/pushproxy/pushproxy/blob/main/docs/runbooks.md#"
)

// occurrence is a number of rate-rule occurrences at one instant.
type occurrence struct {
	at time.Time
	n  int
}

// series is the state of one rule for one label set.
type series struct {
	rule   *Rule
	labels map[string]string
	fp     string

	occ         []occurrence // KindRate: recent occurrences, oldest first
	consecutive int          // KindState: consecutive failures
	passSince   time.Time    // KindState: first pass after failures while firing

	firing      bool
	startsAt    time.Time
	occurrences int
	detail      string
}

// Engine evaluates rules over signals. It is not safe for concurrent use;
// see Manager.
type Engine struct {
	rules  map[string]*Rule
	now    func() time.Time
	series map[string]*series
}

// NewEngine returns an engine for rules that reads time from now.
func NewEngine(rules []Rule, now func() time.Time) (*Engine, error) {
	if now == nil {
		now = time.Now
	}
	e := &Engine{rules: make(map[string]*Rule, len(rules)), now: now, series: map[string]*series{}}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return nil, err
		}
		if _, dup := e.rules[r.Name]; dup {
			return nil, fmt.Errorf("%w: rule %s is defined twice", ErrInvalidRule, r.Name)
		}
		e.rules[r.Name] = &r
	}
	return e, nil
}

// Rule returns the rule named name.
func (e *Engine) Rule(name string) (Rule, bool) {
	r, ok := e.rules[name]
	if !ok {
		return Rule{}, false
	}
	return *r, true
}

// Observe feeds one signal and returns the alerts that changed state
// because of it: at most one, newly firing or resolved.
func (e *Engine) Observe(sig Signal) ([]Alert, error) {
	rule, ok := e.rules[sig.Rule]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownRule, sig.Rule)
	}
	now := e.now()
	s := e.seriesFor(rule, sig.Labels)
	if sig.Detail != "" {
		s.detail = sig.Detail
	}
	switch rule.Kind {
	case KindRate:
		n := max(sig.Count, 1)
		s.occ = append(s.occ, occurrence{at: now, n: n})
		s.prune(now)
		if s.firing {
			s.occurrences += n
			return nil, nil
		}
		if s.rateHolds(now) {
			s.occurrences = s.windowCount(now)
			return []Alert{s.fire(now)}, nil
		}
	case KindState:
		if sig.Failing {
			s.consecutive++
			s.passSince = time.Time{}
			if s.firing {
				s.occurrences++
				return nil, nil
			}
			if s.consecutive >= rule.Threshold {
				s.occurrences = s.consecutive
				return []Alert{s.fire(now)}, nil
			}
			return nil, nil
		}
		s.consecutive = 0
		if s.firing && s.passSince.IsZero() {
			s.passSince = now
		}
		if a, ok := s.maybeResolve(now); ok {
			delete(e.series, s.key())
			return []Alert{a}, nil
		}
		if !s.firing {
			delete(e.series, s.key())
		}
	}
	return nil, nil
}

// Evaluate resolves incidents whose condition has been clear for their
// cool-down and forgets old occurrences. Call it periodically; its result
// depends only on the clock, not on how often it is called.
func (e *Engine) Evaluate() []Alert {
	now := e.now()
	var out []Alert
	for _, key := range slices.Sorted(maps.Keys(e.series)) {
		s := e.series[key]
		if s.rule.Kind == KindRate {
			s.prune(now)
		}
		if a, ok := s.maybeResolve(now); ok {
			out = append(out, a)
			delete(e.series, key)
			continue
		}
		if !s.firing && s.rule.Kind == KindRate && len(s.occ) == 0 {
			delete(e.series, key)
		}
	}
	return out
}

// Active returns the firing alerts, sorted by fingerprint.
func (e *Engine) Active() []Alert {
	var out []Alert
	for _, key := range slices.Sorted(maps.Keys(e.series)) {
		if s := e.series[key]; s.firing {
			out = append(out, s.alert(time.Time{}))
		}
	}
	return out
}

func (e *Engine) seriesFor(rule *Rule, labels map[string]string) *series {
	all := make(map[string]string, len(labels)+3)
	maps.Copy(all, labels)
	all[LabelAlertName] = rule.Name
	all[LabelSeverity] = string(rule.Severity)
	all[LabelService] = ServiceName
	all[LabelComponent] = ComponentName
	fp := Fingerprint(all)
	if s, ok := e.series[fp]; ok {
		return s
	}
	s := &series{rule: rule, labels: all, fp: fp}
	e.series[fp] = s
	return s
}

func (s *series) key() string { return s.fp }

// prune drops occurrences that can no longer affect the condition or the
// time it cleared.
func (s *series) prune(now time.Time) {
	horizon := now.Add(-s.rule.Window - s.rule.CoolDown)
	i := 0
	for i < len(s.occ) && !s.occ[i].at.After(horizon) {
		i++
	}
	s.occ = s.occ[i:]
}

// windowCount is the number of occurrences within (now-Window, now].
func (s *series) windowCount(now time.Time) int {
	from := now.Add(-s.rule.Window)
	n := 0
	for _, o := range s.occ {
		if o.at.After(from) && !o.at.After(now) {
			n += o.n
		}
	}
	return n
}

func (s *series) rateHolds(now time.Time) bool {
	return s.windowCount(now) >= s.rule.Threshold
}

// rateClearedAt is when a rate condition stopped holding: when the
// occurrence that kept the count at the threshold left the window. Pruned
// occurrences are older than any cool-down can reach, so when too few are
// left the condition cleared long enough ago.
func (s *series) rateClearedAt() (time.Time, bool) {
	need := s.rule.Threshold
	for i := len(s.occ) - 1; i >= 0; i-- {
		need -= s.occ[i].n
		if need <= 0 {
			return s.occ[i].at.Add(s.rule.Window), true
		}
	}
	return time.Time{}, false
}

// maybeResolve resolves a firing incident whose condition has been clear
// for the cool-down.
func (s *series) maybeResolve(now time.Time) (Alert, bool) {
	if !s.firing {
		return Alert{}, false
	}
	switch s.rule.Kind {
	case KindRate:
		if s.rateHolds(now) {
			return Alert{}, false
		}
		if cleared, ok := s.rateClearedAt(); ok && now.Before(cleared.Add(s.rule.CoolDown)) {
			return Alert{}, false
		}
	case KindState:
		if s.passSince.IsZero() || now.Before(s.passSince.Add(s.rule.CoolDown)) {
			return Alert{}, false
		}
	}
	s.firing = false
	return s.alert(now), true
}

func (s *series) fire(now time.Time) Alert {
	s.firing = true
	s.startsAt = now
	return s.alert(time.Time{})
}

func (s *series) alert(endsAt time.Time) Alert {
	ann := map[string]string{AnnotationSummary: s.rule.Summary}
	if s.detail != "" {
		ann[AnnotationDescription] = s.detail
	}
	if s.rule.Runbook != "" {
		ann[AnnotationRunbook] = s.rule.Runbook
	}
	ann[AnnotationRunbookURL] = RunbookBase + strings.ToLower(s.rule.Name)
	return Alert{
		Labels:      maps.Clone(s.labels),
		Annotations: ann,
		StartsAt:    s.startsAt,
		EndsAt:      endsAt,
		Fingerprint: s.fp,
		Occurrences: s.occurrences,
	}
}

// Fingerprint is a stable hash of a label set: the same labels always give
// the same fingerprint, whatever their order.
func Fingerprint(labels map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(labels[k]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
