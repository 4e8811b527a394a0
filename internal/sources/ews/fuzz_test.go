package ews

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// FuzzEWS feeds arbitrary bodies to Decode and Map, and through a wrapped
// Source.Parse and Respond. Seeds: the golden requests and the corpus in
// testdata/fuzz/FuzzEWS.
func FuzzEWS(f *testing.F) {
	for _, name := range []string{"sendnotification_newmail.xml", "sendnotification_status.xml", "sendnotification_moved.xml", "sendnotification_error.xml"} {
		f.Add(readFile(f, name))
	}
	src := newTestSource(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := Decode(body)
		if err != nil {
			if req != nil {
				t.Fatal("Decode returned a request with an error")
			}
		} else {
			for _, m := range req.Messages {
				if m.Notification == nil {
					if m.ResponseClass != ClassError {
						t.Fatalf("%s message without a notification", m.ResponseClass)
					}
					continue
				}
				for _, e := range Map(m.Notification, alice) {
					checkMapped(t, e)
				}
			}
		}
		var items []sources.Item
		var perr error
		h := src.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if items, perr = src.Parse(r, body); perr == nil {
				src.Respond(w, r)
			}
		}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/ews", bytes.NewReader(body)))
		if (err == nil) != (perr == nil) {
			t.Fatalf("Decode error %v but Parse error %v", err, perr)
		}
		for _, it := range items {
			checkMapped(t, it.Event)
		}
		if perr == nil && (w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "<SubscriptionStatus>")) {
			t.Fatalf("answer %d: %s", w.Code, w.Body)
		}
	})
}

func checkMapped(t *testing.T, e events.Event) {
	t.Helper()
	if e.Source != events.SourceEWS || e.Tenant != alice.Tenant || e.User != alice.User || e.ChangeID == "" {
		t.Fatalf("mapped event %+v", e)
	}
	if len(e.ChangeID) > events.MaxChangeIDLen {
		t.Fatalf("change id of %d bytes", len(e.ChangeID))
	}
	if e.Kind == events.KindSnapshot && e.Unread == nil {
		t.Fatal("snapshot without a count")
	}
}
