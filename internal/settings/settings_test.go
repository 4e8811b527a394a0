package settings_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/settings"
)

func TestEnableProxyTwiceChangesNothing(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	s, err := settings.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	s = s.WithClock(func() time.Time { return clock })

	p, err := s.Proxy(ctx)
	if err != nil || p.Enabled || p.URI != settings.DefaultURI || p.Name != "OnPrem-Proxy" {
		t.Fatalf("default proxy = %+v, %v", p, err)
	}
	p, changed, err := s.EnableProxy(ctx, "Fabrikam.com", "")
	if err != nil || !changed || !p.Enabled || p.Organization != "fabrikam.com" || !p.WhenCreated.Equal(clock) {
		t.Fatalf("enable = %+v, %v, %v", p, changed, err)
	}
	clock = clock.Add(time.Hour)
	p2, changed, err := s.EnableProxy(ctx, "fabrikam.com", "")
	if err != nil || changed || p2 != p {
		t.Fatalf("second enable changed: %+v %v %v", p2, changed, err)
	}
	p3, changed, err := s.DisableProxy(ctx)
	if err != nil || !changed || p3.Enabled || !p3.WhenChanged.Equal(clock) || !p3.WhenCreated.Equal(p.WhenCreated) {
		t.Fatalf("disable = %+v %v %v", p3, changed, err)
	}
}

func TestEnableProxyRejectsBadInput(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	s, err := settings.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ org, uri string }{
		{"not a domain", ""},
		{"localhost", ""},
		{"fabrikam.com", "ftp://relay"},
		{"fabrikam.com", "relay.example/path"},
	}
	for _, tt := range tests {
		if _, _, err := s.EnableProxy(ctx, tt.org, tt.uri); !errors.Is(err, settings.ErrInvalid) {
			t.Errorf("EnableProxy(%q, %q) = %v, want ErrInvalid", tt.org, tt.uri, err)
		}
	}
	if p, _ := s.Proxy(ctx); p.Enabled || !p.WhenCreated.IsZero() {
		t.Fatalf("a rejected enable saved something: %+v", p)
	}
}

func TestUpdateAuth(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	s, err := settings.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.UpdateAuth(ctx, func(a *settings.Auth) error { a.CurrentCertificateThumbprint = "AB"; return nil })
	if err != nil || a.ServiceName != settings.DefaultServiceName || a.CurrentCertificateThumbprint != "AB" {
		t.Fatalf("%+v %v", a, err)
	}
	abort := errors.New("abort")
	if _, err := s.UpdateAuth(ctx, func(a *settings.Auth) error { a.CurrentCertificateThumbprint = "CD"; return abort }); !errors.Is(err, abort) {
		t.Fatal(err)
	}
	if got, _ := s.Auth(ctx); got.CurrentCertificateThumbprint != "AB" {
		t.Fatalf("aborted change was saved: %+v", got)
	}
}
