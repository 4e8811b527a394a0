// Package alertingtest is a local Prometheus Alertmanager for tests: it
// serves POST /api/v2/alerts, validates each payload against the v2 API's
// postableAlerts schema and records the alerts it accepted.
package alertingtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"
)

// Posted is one alert as received.
type Posted struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     string            `json:"startsAt"`
	EndsAt       string            `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`

	// Received is when the request arrived.
	Received time.Time `json:"-"`
}

// Resolved reports whether the alert was posted with endsAt, which the
// sink under test only sets on a resolved notice.
func (p Posted) Resolved() bool { return p.EndsAt != "" }

// Alertmanager is the test server.
type Alertmanager struct {
	*httptest.Server

	t  testing.TB
	mu sync.Mutex
	// posts holds each accepted request's alerts.
	posts [][]Posted
}

// labelName is the Alertmanager's (Prometheus') label name syntax.
var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// New starts a validating Alertmanager that stops when the test ends.
// A payload that breaks the schema fails the test and gets 400.
func New(t testing.TB) *Alertmanager {
	am := &Alertmanager{t: t}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v2/alerts", am.handle)
	am.Server = httptest.NewServer(mux)
	t.Cleanup(am.Close)
	return am
}

func (am *Alertmanager) handle(w http.ResponseWriter, r *http.Request) {
	if err := am.validateRequest(r); err != nil {
		am.t.Errorf("alertmanager: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var raw []map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		am.t.Errorf("alertmanager: body is not a JSON array of objects: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	batch := make([]Posted, 0, len(raw))
	for i, obj := range raw {
		p, err := validateAlert(obj)
		if err != nil {
			am.t.Errorf("alertmanager: alert %d: %v", i, err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.Received = now
		batch = append(batch, p)
	}
	am.mu.Lock()
	am.posts = append(am.posts, batch)
	am.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (am *Alertmanager) validateRequest(r *http.Request) error {
	if r.Method != http.MethodPost {
		return fmt.Errorf("method %s, want POST", r.Method)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json", ct)
	}
	return nil
}

// validateAlert checks one postableAlert: labels is a required non-empty map
// of valid label names to strings, with alertname; annotations a map of
// strings; startsAt and endsAt date-times; generatorURL a URI; nothing else.
func validateAlert(obj map[string]json.RawMessage) (Posted, error) {
	var p Posted
	for k := range obj {
		switch k {
		case "labels", "annotations", "startsAt", "endsAt", "generatorURL":
		default:
			return p, fmt.Errorf("unknown field %q", k)
		}
	}
	rawLabels, ok := obj["labels"]
	if !ok {
		return p, fmt.Errorf("labels is required")
	}
	if err := json.Unmarshal(rawLabels, &p.Labels); err != nil {
		return p, fmt.Errorf("labels must map strings to strings: %v", err)
	}
	if len(p.Labels) == 0 || p.Labels["alertname"] == "" {
		return p, fmt.Errorf("labels must be non-empty and carry alertname")
	}
	for k := range p.Labels {
		if !labelName.MatchString(k) {
			return p, fmt.Errorf("label name %q is invalid", k)
		}
	}
	if a, ok := obj["annotations"]; ok {
		if err := json.Unmarshal(a, &p.Annotations); err != nil {
			return p, fmt.Errorf("annotations must map strings to strings: %v", err)
		}
	}
	for _, f := range []struct {
		name string
		into *string
	}{{"startsAt", &p.StartsAt}, {"endsAt", &p.EndsAt}} {
		v, ok := obj[f.name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(v, f.into); err != nil {
			return p, fmt.Errorf("%s must be a string: %v", f.name, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, *f.into); err != nil {
			return p, fmt.Errorf("%s %q is not an RFC 3339 date-time", f.name, *f.into)
		}
	}
	if g, ok := obj["generatorURL"]; ok {
		if err := json.Unmarshal(g, &p.GeneratorURL); err != nil {
			return p, fmt.Errorf("generatorURL must be a string: %v", err)
		}
		if u, err := url.Parse(p.GeneratorURL); err != nil || !u.IsAbs() {
			return p, fmt.Errorf("generatorURL %q is not an absolute URI", p.GeneratorURL)
		}
	}
	return p, nil
}

// Posts returns a copy of every accepted request's alerts, in order.
func (am *Alertmanager) Posts() [][]Posted {
	am.mu.Lock()
	defer am.mu.Unlock()
	out := make([][]Posted, len(am.posts))
	for i, b := range am.posts {
		out[i] = append([]Posted(nil), b...)
	}
	return out
}

// Alerts returns every accepted alert named alertname, in arrival order.
func (am *Alertmanager) Alerts(alertname string) []Posted {
	var out []Posted
	for _, batch := range am.Posts() {
		for _, p := range batch {
			if p.Labels["alertname"] == alertname {
				out = append(out, p)
			}
		}
	}
	return out
}

// WaitFor polls until cond holds for the alerts named alertname, failing
// the test after timeout.
func (am *Alertmanager) WaitFor(t testing.TB, alertname string, timeout time.Duration, cond func([]Posted) bool) []Posted {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := am.Alerts(alertname)
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager: condition on %s not met within %s; got %+v", alertname, timeout, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
