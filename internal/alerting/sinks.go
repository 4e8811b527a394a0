package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Message is the JSON form of an alert on NATS and in logs.
type Message struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	Fingerprint  string            `json:"fingerprint"`
	Occurrences  int               `json:"occurrences"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// MessageOf is the JSON form of a.
func MessageOf(a Alert, generatorURL string) Message {
	return Message{
		Status:       a.Status(),
		Labels:       a.Labels,
		Annotations:  a.Annotations,
		StartsAt:     a.StartsAt.UTC(),
		EndsAt:       a.EndsAt.UTC(),
		Fingerprint:  a.Fingerprint,
		Occurrences:  a.Occurrences,
		GeneratorURL: generatorURL,
	}
}

// LogSink writes each alert as one log line: critical firing alerts at
// error level, other firing alerts at warn, resolved notices at info.
type LogSink struct {
	Log zerolog.Logger
}

// Name is "log".
func (LogSink) Name() string { return "log" }

// Send logs each alert.
func (s LogSink) Send(_ context.Context, alerts []Alert) error {
	for _, a := range alerts {
		ev := s.Log.Info()
		if !a.Resolved() {
			ev = s.Log.Warn()
			if a.Severity() == SeverityCritical {
				ev = s.Log.Error()
			}
		}
		labels := zerolog.Dict()
		for k, v := range a.Labels {
			labels.Str(k, v)
		}
		ev.Str("alertname", a.Name()).
			Str("status", a.Status()).
			Str("severity", string(a.Severity())).
			Str("fingerprint", a.Fingerprint).
			Dict("labels", labels).
			Str("summary", a.Annotations[AnnotationSummary]).
			Str("description", a.Annotations[AnnotationDescription]).
			Time("starts_at", a.StartsAt).
			Int("occurrences", a.Occurrences).
			Msg("alert " + a.Status())
	}
	return nil
}

// SubjectPrefix is the root of the NATS subjects alerts are published on:
// monitor.alerts.<severity>.
const SubjectPrefix = "monitor.alerts"

// Subject is the NATS subject of alerts of severity s.
func Subject(s Severity) string { return SubjectPrefix + "." + string(s) }

// NATSSink publishes each alert as a JSON Message on monitor.alerts.<severity>.
type NATSSink struct {
	NC *nats.Conn
	// GeneratorURL, if set, goes into every message.
	GeneratorURL string
}

// Name is "nats".
func (NATSSink) Name() string { return "nats" }

// Send publishes the alerts and waits until the server has them.
func (s NATSSink) Send(ctx context.Context, alerts []Alert) error {
	for _, a := range alerts {
		data, err := json.Marshal(MessageOf(a, s.GeneratorURL))
		if err != nil {
			return backoff.Permanent(fmt.Errorf("encoding alert: %w", err))
		}
		if err := s.NC.Publish(Subject(a.Severity()), data); err != nil {
			return fmt.Errorf("publishing alert to NATS: %w", err)
		}
	}
	if err := s.NC.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("flushing alerts to NATS: %w", err)
	}
	return nil
}

// AlertmanagerPath is the Alertmanager v2 API endpoint that takes alerts.
const AlertmanagerPath = "/api/v2/alerts"

// PostableAlert is one alert of the Alertmanager v2 API (POST
// /api/v2/alerts takes a JSON array of them). A firing alert has no endsAt;
// a resolved one has endsAt set to when it ended.
type PostableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// AlertmanagerSink posts alerts to a Prometheus Alertmanager with its v2
// API. It is a Resender: the Alertmanager resolves an alert it has not heard
// of for its resolve_timeout (5 minutes by default), so firing alerts are
// posted again every Resend.
type AlertmanagerSink struct {
	// URL is the Alertmanager's base URL, e.g. http://alertmanager:9093.
	URL string
	// Client sends the requests; a client with a 10 s timeout when nil.
	Client *http.Client
	// GeneratorURL links each alert to its source, e.g. the monitor's
	// /metrics page. Optional.
	GeneratorURL string
	// Resend is how often firing alerts are posted again; one minute when
	// zero, never when negative.
	Resend time.Duration
}

// NewAlertmanagerSink checks baseURL and returns a sink for it.
func NewAlertmanagerSink(baseURL, generatorURL string, client *http.Client) (*AlertmanagerSink, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("alertmanager URL %q is not an absolute http(s) URL", baseURL)
	}
	if generatorURL != "" {
		if g, err := url.Parse(generatorURL); err != nil || !g.IsAbs() {
			return nil, fmt.Errorf("generator URL %q is not an absolute URL", generatorURL)
		}
	}
	return &AlertmanagerSink{URL: strings.TrimRight(baseURL, "/"), Client: client, GeneratorURL: generatorURL}, nil
}

// Name is "alertmanager".
func (*AlertmanagerSink) Name() string { return "alertmanager" }

// ResendInterval is how often firing alerts are posted again.
func (s *AlertmanagerSink) ResendInterval() time.Duration {
	switch {
	case s.Resend == 0:
		return time.Minute
	case s.Resend < 0:
		return 0
	}
	return s.Resend
}

// Send posts the alerts. A 4xx answer (the payload was refused) is
// permanent; network errors and 5xx are retried by the Manager.
func (s *AlertmanagerSink) Send(ctx context.Context, alerts []Alert) error {
	body := make([]PostableAlert, 0, len(alerts))
	for _, a := range alerts {
		body = append(body, PostableAlert{
			Labels:       a.Labels,
			Annotations:  a.Annotations,
			StartsAt:     a.StartsAt.UTC(),
			EndsAt:       a.EndsAt.UTC(),
			GeneratorURL: s.GeneratorURL,
		})
	}
	data, err := json.Marshal(body)
	if err != nil {
		return backoff.Permanent(fmt.Errorf("encoding alerts: %w", err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+AlertmanagerPath, bytes.NewReader(data))
	if err != nil {
		return backoff.Permanent(fmt.Errorf("building alertmanager request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("posting alerts to %s: %w", s.URL, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("posting alerts to %s: %s: %s", s.URL, resp.Status, strings.TrimSpace(string(msg)))
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
		return backoff.Permanent(err)
	}
	return err
}
