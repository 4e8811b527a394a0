package relay

import (
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/logpush"
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

func TestEachOrganizationHasItsOwnProvider(t *testing.T) {
	set := newProviderSet(ProviderOptions{Log: logpush.New(logpush.Config{})}, zerolog.Nop())
	t.Cleanup(set.Close)
	set.apply("webmail", &registry.App{AppID: "webmail", Provider: registry.KindWebPush, Organizations: []string{"contoso.com", "fabrikam.com"},
		WebPush: &registry.WebPush{PrivateKeyFile: writeVAPIDKey(t), Subject: "mailto:ops@example.com"}})
	set.apply("demo", &registry.App{AppID: "demo", Provider: registry.KindLog})

	route := func(org, app string) providers.Provider {
		t.Helper()
		p, err := set.Route(org, app)
		if err != nil || p == nil {
			t.Fatalf("Route(%s, %s) = %v, %v", org, app, p, err)
		}
		return p
	}
	// Its own provider, hence its own connections and tokens, per
	// organization+app; the same one every time.
	contoso, fabrikam := route("contoso.com", "webmail"), route("fabrikam.com", "webmail")
	if contoso == fabrikam {
		t.Error("two organizations share one Web Push provider")
	}
	if route("contoso.com", "webmail") != contoso {
		t.Error("an organization's provider changed between routes")
	}
	// The built-in log provider serves everyone.
	if route("contoso.com", "demo") != route("fabrikam.com", "demo") {
		t.Error("the log app got a provider per organization")
	}
}
