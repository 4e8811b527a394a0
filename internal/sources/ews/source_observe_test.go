package ews

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSourceObserves: Config.Observe hears of each notification of a
// known subscription once its events are stored (Respond), with its
// newest watermark.
func TestSourceObserves(t *testing.T) {
	at := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	unknown := strings.ReplaceAll(string(readFile(t, "sendnotification_status.xml")), subID, "SomeoneElse")
	tests := []struct {
		name    string
		body    string
		respond bool // ingest stored the events and answers
		want    []string
	}{
		{"new mail", string(readFile(t, "sendnotification_newmail.xml")), true, []string{subID + " AQAAAOeN0NC0hgNHvU+3Bxu0kFfHqBIAAAAAAAA="}},
		{"heartbeat", string(readFile(t, "sendnotification_status.xml")), true, []string{subID + " AQAAAOeN0NC0hgNHvU+3Bxu0kFfHqBIAAAAAAAA="}},
		{"no watermark", notification(`<t:StatusEvent/>`), true, []string{subID + " "}},
		{"not stored", string(readFile(t, "sendnotification_newmail.xml")), false, nil},
		{"error message", string(readFile(t, "sendnotification_error.xml")), true, nil},
		{"unknown subscription", unknown, true, nil},
		{"malformed", "<x/>", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			src := newTestSource(t, func(c *Config) {
				c.Now = func() time.Time { return at }
				c.Observe = func(_ context.Context, id, watermark string, when time.Time) {
					if !when.Equal(at) {
						t.Errorf("observed at %s", when)
					}
					got = append(got, id+" "+watermark)
				}
			})
			h := src.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := src.Parse(r, []byte(tt.body)); err == nil && tt.respond {
					src.Respond(w, r)
				}
			}))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/ews", strings.NewReader(tt.body)))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("observed %q, want %q", got, tt.want)
			}
		})
	}
}
