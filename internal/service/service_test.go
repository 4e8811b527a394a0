package service

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func TestHealthReadyMetrics(t *testing.T) {
	notReady := errors.New("stream MAIL missing")
	ready := true
	mux := http.NewServeMux()
	Handle(mux, NewRegistry(), func(context.Context) error {
		if ready {
			return nil
		}
		return notReady
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		path   string
		ready  bool
		status int
		body   string
	}{
		{"/healthz", false, 200, `"ok"`},
		{"/readyz", true, 200, `"ready"`},
		{"/readyz", false, 503, "stream MAIL missing"},
		{"/metrics", true, 200, "go_goroutines"},
	}
	for _, tt := range tests {
		ready = tt.ready
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) {
			t.Errorf("%s (ready=%v) = %d %s, want %d containing %s", tt.path, tt.ready, resp.StatusCode, body, tt.status, tt.body)
		}
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("hidden")
	log.Info().Msg("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") {
		t.Fatalf("log output %q", buf.String())
	}
	for _, bad := range [][2]string{{"loud", "json"}, {"info", "xml"}} {
		if _, err := NewLogger(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("NewLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestServeDrainsOnCancel(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(200 * time.Millisecond)
		w.WriteHeader(204)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, zerolog.Nop(), ln, h, 10*time.Second) }()
	respc := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			respc <- 0
			return
		}
		resp.Body.Close()
		respc <- resp.StatusCode
	}()
	<-started
	cancel()
	if code := <-respc; code != 204 {
		t.Fatalf("request in flight got %d, want 204 after drain", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRegister(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "pushproxy_test_total", Help: "test"})
	if err := Register(nil, "test", c); err != nil {
		t.Fatalf("nil registry: %v", err)
	}
	reg := prometheus.NewRegistry()
	if err := Register(reg, "test", c); err != nil {
		t.Fatal(err)
	}
	err := Register(reg, "test", c)
	if err == nil || !strings.Contains(err.Error(), "registering test metrics") {
		t.Fatalf("registering twice: %v", err)
	}
}
