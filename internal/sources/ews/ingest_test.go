package ews_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/ingest/ingesttest"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

const (
	testKey = "ews-test-key"
	subID   = "FwBleGNoMDEuZmFicmlrYW0uY29tEAAAAL9T5gfVLkJMqeS2ZbJhFyPX4JtH5NPaCA=="
)

// server is ingest with the EWS source mounted as the lead wires it, over
// an embedded JetStream.
type server struct {
	conn   *broker.Conn
	url    string
	mu     sync.Mutex
	errors []ews.SubscriptionError
}

func newServer(t *testing.T, registry ews.SubscriptionRegistry) *server {
	t.Helper()
	conn := brokertest.Start(t)
	reg := prometheus.NewRegistry()
	s := &server{conn: conn}
	src, err := ews.NewSource(ews.Config{
		Subscriptions: registry,
		Key:           testKey,
		Metrics:       reg,
		OnSubscriptionError: func(_ context.Context, e ews.SubscriptionError) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.errors = append(s.errors, e)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.url = ingesttest.Serve(t, conn, ingest.DefaultConfig(), ingest.Deps{Registry: reg}, func(srv *ingest.Server) {
		h := srv.SourceHandler(ingest.Source{
			Name:       events.SourceEWS,
			Auth:       src,
			MediaTypes: ews.MediaTypes,
			MaxBody:    64 << 10,
			Parse:      src.Parse,
			Respond:    func(w http.ResponseWriter, r *http.Request, _ *ingest.Result) { src.Respond(w, r) },
		})
		srv.Handle("POST /v1/ews", src.Wrap(h))
	})
	return s
}

func (s *server) post(t *testing.T, query, contentType string, body []byte) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/v1/ews"+query, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("SOAPAction", ews.SOAPAction)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(data)
}

func golden(t *testing.T, name string) []byte {
	t.Helper()
	return testfs.Read(t, filepath.Join("testdata", name))
}

func registry(t *testing.T) *ews.StaticRegistry {
	t.Helper()
	r, err := ews.LoadRegistryFile(filepath.Join("testdata", "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fault is the part of a SOAP 1.1 fault the tests read.
type fault struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
	Body    struct {
		Fault struct {
			Code   string `xml:"faultcode"`
			String string `xml:"faultstring"`
		} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
}

func TestThroughIngest(t *testing.T) {
	s := newServer(t, registry(t))
	withKey := "?" + ews.KeyParam + "=" + testKey
	unknown := bytes.ReplaceAll(golden(t, "sendnotification_newmail.xml"), []byte(subID), []byte("SomeoneElse"))
	tests := []struct {
		name        string
		query       string
		contentType string
		body        []byte
		status      int
		answer      string // SubscriptionStatus, or the faultcode of an error
		reason      string // a part of the faultstring
		stored      []events.Kind
	}{
		{name: "new mail", body: golden(t, "sendnotification_newmail.xml"), status: 200, answer: "OK", stored: []events.Kind{events.KindNew, events.KindSnapshot}},
		{name: "new mail again", body: golden(t, "sendnotification_newmail.xml"), status: 200, answer: "OK"},
		{name: "heartbeat", body: golden(t, "sendnotification_status.xml"), status: 200, answer: "OK"},
		{name: "moves", body: golden(t, "sendnotification_moved.xml"), status: 200, answer: "OK", stored: []events.Kind{events.KindMoved, events.KindDeleted, events.KindSnapshot}},
		{name: "subscription error", body: golden(t, "sendnotification_error.xml"), status: 200, answer: "OK"},
		{name: "unknown subscription", body: unknown, status: 200, answer: "Unsubscribe"},
		{name: "no key", query: "-", body: golden(t, "sendnotification_status.xml"), status: 401, answer: "s:Client", reason: "credentials"},
		{name: "wrong key", query: "?key=guess", body: golden(t, "sendnotification_status.xml"), status: 401, answer: "s:Client", reason: "credentials"},
		{name: "json", contentType: "application/json", body: []byte(`{}`), status: 415, answer: "s:Client", reason: "text/xml"},
		{name: "latin-1", contentType: "text/xml; charset=iso-8859-1", body: golden(t, "sendnotification_status.xml"), status: 415, answer: "s:Client", reason: "utf-8"},
		{name: "malformed", body: []byte("<s:Envelope"), status: 400, answer: "s:Client", reason: "malformed SendNotification request"},
		{name: "too large", body: append(golden(t, "sendnotification_status.xml"), bytes.Repeat([]byte(" "), 64<<10)...), status: 413, answer: "s:Client", reason: "larger than"},
		{name: "invalid count", body: bytes.Replace(golden(t, "sendnotification_newmail.xml"), []byte("<t:UnreadCount>3<"), []byte("<t:UnreadCount>2000000000<"), 1), status: 422, answer: "s:Client", reason: "invalid"},
	}
	before := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			query, ct := tt.query, tt.contentType
			switch query {
			case "":
				query = withKey
			case "-":
				query = ""
			}
			if ct == "" {
				ct = ews.ContentType
			}
			resp, body := s.post(t, query, ct, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if got := resp.Header.Get("Content-Type"); got != ews.ContentType {
				t.Fatalf("Content-Type %q, want %q", got, ews.ContentType)
			}
			if tt.status == 200 {
				if want := string(ews.ResultEnvelope(ews.Status(tt.answer))); body != want {
					t.Fatalf("answer:\n%s\nwant:\n%s", body, want)
				}
			} else {
				var f fault
				if err := xml.Unmarshal([]byte(body), &f); err != nil {
					t.Fatalf("answer is not a SOAP fault: %v\n%s", err, body)
				}
				if f.Body.Fault.Code != tt.answer || !strings.Contains(f.Body.Fault.String, tt.reason) {
					t.Fatalf("fault %+v, want %s with %q", f, tt.answer, tt.reason)
				}
			}
			all := s.stored(t)
			var kinds []events.Kind
			for _, e := range all[before:] {
				kinds = append(kinds, e.Kind)
				if e.Source != events.SourceEWS || e.Tenant != "fabrikam.com" || e.User != "alice@fabrikam.com" {
					t.Errorf("stored %+v", e)
				}
			}
			before = len(all)
			if len(kinds) != len(tt.stored) {
				t.Fatalf("stored %v, want %v", kinds, tt.stored)
			}
			for i := range kinds {
				if kinds[i] != tt.stored[i] {
					t.Fatalf("stored %v, want %v", kinds, tt.stored)
				}
			}
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errors) != 1 || s.errors[0].ResponseCode != "ErrorReadEventsFailed" || !s.errors[0].Known || s.errors[0].Subscription.User != "alice@fabrikam.com" {
		t.Fatalf("subscription errors %+v", s.errors)
	}
}

type brokenRegistry struct{}

func (brokenRegistry) Lookup(context.Context, string) (ews.Subscription, error) {
	return ews.Subscription{}, jetstream.ErrNoStreamResponse
}

func TestUnavailableIsAServerFault(t *testing.T) {
	t.Run("registry", func(t *testing.T) {
		s := newServer(t, brokenRegistry{})
		resp, body := s.post(t, "?key="+testKey, ews.ContentType, golden(t, "sendnotification_status.xml"))
		assertUnavailable(t, resp, body, "registry is unavailable")
	})
	t.Run("JetStream", func(t *testing.T) {
		s := newServer(t, registry(t))
		s.conn.NC.Close()
		resp, body := s.post(t, "?key="+testKey, ews.ContentType, golden(t, "sendnotification_newmail.xml"))
		assertUnavailable(t, resp, body, "not stored")
	})
}

func assertUnavailable(t *testing.T, resp *http.Response, body, reason string) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	var f fault
	if err := xml.Unmarshal([]byte(body), &f); err != nil || f.Body.Fault.Code != ews.FaultServer || !strings.Contains(f.Body.Fault.String, reason) {
		t.Fatalf("fault %+v (%v), want s:Server with %q:\n%s", f, err, reason, body)
	}
}

// stored returns the events in the MAIL stream.
func (s *server) stored(t *testing.T) []events.Event {
	t.Helper()
	return brokertest.Events(t, s.conn.JS)
}
