package relay

import (
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/relay/registry"
)

func TestRouteChecksTheOrganization(t *testing.T) {
	set := newProviderSet(ProviderOptions{}, zerolog.Nop())
	t.Cleanup(set.Close)
	set.apply("bound", &registry.App{AppID: "bound", Provider: registry.KindLog, Organizations: []string{"contoso.com"}})
	set.apply("legacy-log", &registry.App{AppID: "legacy-log", Provider: registry.KindLog})
	// An app of a real push service registered before apps were bound;
	// its files are missing too, but the binding is checked first.
	set.apply("legacy-fcm", &registry.App{AppID: "legacy-fcm", Provider: registry.KindFCM, FCM: &registry.FCM{CredentialsFile: "/nonexistent/key.json"}})

	tests := []struct {
		org, app string
		wantErr  error
		mention  string
	}{
		{"contoso.com", "bound", nil, ""},
		{"fabrikam.com", "bound", registry.ErrNotBound, "not bound to organization fabrikam.com"},
		{"fabrikam.com", "legacy-log", nil, ""},
		{"fabrikam.com", "legacy-fcm", registry.ErrNotBound, "pushctl relay app bind --app-id legacy-fcm --organization fabrikam.com"},
		{"fabrikam.com", "nobody", ErrUnknownApp, ""},
	}
	for _, tt := range tests {
		t.Run(tt.org+"/"+tt.app, func(t *testing.T) {
			p, err := set.Route(tt.org, tt.app)
			if tt.wantErr == nil {
				if err != nil || p == nil {
					t.Fatalf("Route = %v, %v, want a provider", p, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || p != nil {
				t.Fatalf("Route = %v, %v, want %v", p, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not say %q", err, tt.mention)
			}
		})
	}
}
