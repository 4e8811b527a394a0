package graph

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/events"
)

// FuzzGraph feeds arbitrary bodies to Decode, ParseResource and
// Source.Parse, and uses the body as a validation token for Handshake.
// Seeds: the golden files and the corpus in testdata/fuzz/FuzzGraph.
func FuzzGraph(f *testing.F) {
	for _, name := range []string{"notifications.json", "lifecycle.json"} {
		f.Add(readFile(f, name))
	}
	s := newTestSource(f, nil)
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	f.Fuzz(func(t *testing.T, body []byte) {
		if c, err := Decode(body, 0); err == nil {
			for _, n := range c.Value {
				if res, err := ParseResource(n.Resource); err == nil && res.UserID == "" {
					t.Fatalf("resource %q parsed without a user", n.Resource)
				}
			}
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/graph", bytes.NewReader(body))
		items, err := s.Parse(r, body)
		if err == nil {
			for _, it := range items {
				e := it.Event
				if it.Err != nil || e.Source != events.SourceGraph || e.Tenant != "fabrikam.com" || e.Mailbox == "" || !strings.HasPrefix(e.ChangeID, "graph:") {
					t.Fatalf("item %+v (%v)", e, it.Err)
				}
				if len(e.ChangeID) > events.MaxChangeIDLen {
					t.Fatalf("change id of %d bytes", len(e.ChangeID))
				}
			}
		}
		token := string(body)
		w := httptest.NewRecorder()
		s.Handshake(next).ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/graph?"+url.Values{ValidationParam: {token}}.Encode(), nil))
		switch w.Code {
		case http.StatusOK:
			if w.Body.String() != token || checkValidationToken(token) != "" {
				t.Fatalf("echoed %q for %q", w.Body, token)
			}
		case http.StatusBadRequest:
			if checkValidationToken(token) == "" {
				t.Fatalf("refused a good token %q", token)
			}
		default:
			t.Fatalf("handshake answered %d", w.Code)
		}
	})
}
