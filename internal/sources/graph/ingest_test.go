package graph_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/ingest/ingesttest"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

// server is ingest with the Graph source mounted as the lead wires it,
// over an embedded JetStream.
type server struct {
	conn      *broker.Conn
	url       string
	mu        sync.Mutex
	lifecycle []graph.Lifecycle
}

func newServer(t *testing.T) *server {
	t.Helper()
	conn := brokertest.Start(t)
	reg := prometheus.NewRegistry()
	dir, err := graph.LoadDirectoryFile(filepath.Join("testdata", "directory.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := &server{conn: conn}
	src, err := graph.NewSource(graph.Config{
		ClientStates: []string{"secretClientValue"},
		Users:        dir,
		Metrics:      reg,
		OnLifecycle: func(_ context.Context, l graph.Lifecycle) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.lifecycle = append(s.lifecycle, l)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.url = ingesttest.Serve(t, conn, ingest.DefaultConfig(), ingest.Deps{Registry: reg}, func(srv *ingest.Server) {
		h := srv.SourceHandler(ingest.Source{
			Name:       events.SourceGraph,
			Auth:       src,
			MediaTypes: graph.MediaTypes,
			Timeout:    graph.PublishTimeout,
			Parse:      src.Parse,
			Respond:    func(w http.ResponseWriter, r *http.Request, _ *ingest.Result) { src.Respond(w, r) },
		})
		srv.Handle("POST /v1/graph", src.Handshake(h))
	})
	return s
}

func (s *server) do(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(data)
}

func (s *server) post(t *testing.T, contentType string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/v1/graph", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	return s.do(t, req)
}

func (s *server) storedCount(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := s.conn.JS.Stream(ctx, broker.StreamMail)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func golden(t *testing.T, name string) []byte {
	t.Helper()
	return testfs.Read(t, filepath.Join("testdata", name))
}

func TestThroughIngest(t *testing.T) {
	s := newServer(t)

	// The validation request exactly as Graph sends it.
	raw, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(golden(t, "validation.http"))))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(raw.Method, s.url+raw.URL.String(), raw.Body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = raw.Header
	status, header, body := s.do(t, req)
	const token = "Validation: Testing client application reachability for subscription Request-Id: 2f3a1c5e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"
	if status != 200 || body != token || !strings.HasPrefix(header.Get("Content-Type"), "text/plain") {
		t.Fatalf("validation answered %d %q %q", status, header.Get("Content-Type"), body)
	}

	tests := []struct {
		name        string
		contentType string
		body        []byte
		status      int
		code        string // error.code of a JSON error
		stored      uint64 // events added to the stream
	}{
		{name: "notifications", body: golden(t, "notifications.json"), status: 202, stored: 3},
		{name: "retry", body: golden(t, "notifications.json"), status: 202},
		{name: "lifecycle", body: golden(t, "lifecycle.json"), status: 202},
		{name: "forged", body: bytes.ReplaceAll(golden(t, "notifications.json"), []byte("secretClientValue"), []byte("guess")), status: 401, code: "unauthorized"},
		{name: "text", contentType: "text/plain", body: golden(t, "notifications.json"), status: 415, code: "unsupported_media_type"},
		{name: "malformed", body: []byte(`{"value":[`), status: 400, code: "malformed"},
	}
	var before uint64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := tt.contentType
			if ct == "" {
				ct = "application/json; charset=utf-8"
			}
			status, _, body := s.post(t, ct, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if tt.code != "" {
				var e struct {
					Error struct {
						Code string `json:"code"`
					} `json:"error"`
				}
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != tt.code {
					t.Fatalf("error %q, want code %s", body, tt.code)
				}
			} else if body != "" {
				t.Fatalf("202 with a body: %q", body)
			}
			n := s.storedCount(t)
			if n-before != tt.stored {
				t.Fatalf("%d events stored, want %d", n-before, tt.stored)
			}
			before = n
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lifecycle) != 2 || s.lifecycle[0].Event != graph.LifecycleReauthorizationRequired || s.lifecycle[1].Event != graph.LifecycleMissed {
		t.Fatalf("lifecycle notifications %+v", s.lifecycle)
	}
}
