package pushnow

import (
	"context"
	"errors"
	"testing"

	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
)

type proxySource struct {
	proxy settings.Proxy
	err   error
}

func (p proxySource) Proxy(context.Context) (settings.Proxy, error) { return p.proxy, p.err }

func TestRelayURI(t *testing.T) {
	failed := errors.New("no settings")
	tests := []struct {
		name    string
		source  proxySource
		want    string
		wantErr error
	}{
		{"enabled", proxySource{proxy: settings.Proxy{Enabled: true, URI: "https://relay.example"}}, "https://relay.example", nil},
		{"disabled", proxySource{proxy: settings.Proxy{URI: "https://relay.example"}}, "", ErrProxyDisabled},
		{"no uri", proxySource{proxy: settings.Proxy{Enabled: true}}, "", ErrProxyDisabled},
		{"settings fail", proxySource{err: failed}, "", failed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RelayURI(t.Context(), tt.source)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("RelayURI = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestTallyAdd(t *testing.T) {
	var got Tally
	for _, s := range []relayproto.DeviceStatus{
		relayproto.DeviceDelivered, relayproto.DeviceDelivered, relayproto.DeviceGone,
		relayproto.DeviceRetry, relayproto.DeviceRejected, "unknown",
	} {
		got.Add(s)
	}
	if want := (Tally{Delivered: 2, Gone: 1, Retry: 1, Rejected: 2}); got != want {
		t.Fatalf("Tally = %+v, want %+v", got, want)
	}
}
