package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/logpush"
)

// event is one Server-Sent Event.
type event struct {
	name string
	data string
}

// readEvent reads the next event, skipping comments and the retry field.
func readEvent(t *testing.T, r *bufio.Reader) event {
	t.Helper()
	var e event
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && e.name != "":
			return e
		case strings.HasPrefix(line, "event: "):
			e.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			e.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func TestPageAndEvents(t *testing.T) {
	src := logpush.New(logpush.Config{})
	ctx := context.Background()
	secret := `{"endpoint":"https://push.example/secret","keys":{"auth":"k"}}`
	if err := src.Send(ctx, providers.Badge{Tenant: "fabrikam.com", AppID: "web", Device: secret, Count: 3}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	mux := http.NewServeMux()
	New(src, zerolog.Nop(), stop).Register(mux, "/devices")
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/devices")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	html := string(page)
	ref := (providers.Badge{AppID: "web", Device: secret}).Ref()
	if resp.StatusCode != 200 || !strings.Contains(html, `data-count="3"`) || !strings.Contains(html, ref) || strings.Contains(html, "secret") {
		t.Fatalf("page %d:\n%s", resp.StatusCode, html)
	}
	if !strings.Contains(html, `new EventSource("/devices/events")`) {
		t.Fatal("the page does not connect to its event stream")
	}

	// The event stream: the snapshot, then each update.
	resp, err = http.Get(srv.URL + "/devices/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	e := readEvent(t, r)
	var devices []Device
	if err := json.Unmarshal([]byte(e.data), &devices); err != nil || e.name != "snapshot" || len(devices) != 1 || devices[0].Device != ref || devices[0].Count != 3 {
		t.Fatalf("first event %+v: %v", e, err)
	}
	if err := src.Send(ctx, providers.Badge{Tenant: "fabrikam.com", AppID: "web", Device: secret, Count: 9, ID: "n2"}); err != nil {
		t.Fatal(err)
	}
	e = readEvent(t, r)
	if err := json.Unmarshal([]byte(e.data), &devices); err != nil || e.name != "update" || len(devices) != 1 || devices[0].Count != 9 || devices[0].Notification != "n2" {
		t.Fatalf("update event %+v: %v", e, err)
	}

	// Closing stop ends the stream, as at shutdown.
	close(stop)
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, r); done <- err }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the event stream did not end when the server stopped")
	}
}
