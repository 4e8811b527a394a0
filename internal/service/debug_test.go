package service_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/service"
)

func TestCheckDebugAddr(t *testing.T) {
	for _, tt := range []struct {
		addr string
		err  string
	}{
		{"127.0.0.1:6060", ""},
		{"[::1]:6060", ""},
		{"localhost:6060", ""},
		{":6060", "not a loopback address"},
		{"0.0.0.0:6060", "not a loopback address"},
		{"10.0.0.5:6060", "not a loopback address"},
		{"6060", "not host:port"},
	} {
		err := service.CheckDebugAddr(tt.addr)
		if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("CheckDebugAddr(%q) = %v, want %q", tt.addr, err, tt.err)
		}
	}
}

func TestDebugServerServesProfiles(t *testing.T) {
	d, err := service.ListenDebug("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	resp, err := http.Get("http://" + d.Addr().String() + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("%s\n%.300s", resp.Status, body)
	}
}
