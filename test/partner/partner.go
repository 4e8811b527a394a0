// Package partner sets an organization up for tests the way an operator
// does with pushctl: an S2S certificate, the auth settings and the proxy
// enabled toward a relay (pushctl auth new-certificate, pushctl proxy
// enable), and the certificate registered at the relay (pushctl relay
// partner add). End-to-end tests share it.
package partner

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/relay"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

// Setup is what New made.
type Setup struct {
	// Settings is the on-premises settings store.
	Settings *settings.Store
	// CertDir holds the certificate and its key.
	CertDir string
	// Tokens is the token source a dispatcher signs with.
	Tokens *onprem.Source
	// Registry is the relay's registry, with the organization's
	// certificate; tests add their apps to it.
	Registry *registry.Store
}

// New sets org up on js (a provisioned layout) toward a relay listening
// on relayAddr (host:port, plain HTTP).
func New(t testing.TB, ctx context.Context, js jetstream.JetStream, org, relayAddr string) Setup {
	t.Helper()
	store, err := settings.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	certDir := t.TempDir()
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: org})
	if err != nil {
		t.Fatal(err)
	}
	if err := onprem.Save(certDir, cert); err != nil {
		t.Fatal(err)
	}
	if _, err := store.UpdateAuth(ctx, func(a *settings.Auth) error { a.CurrentCertificateThumbprint = cert.Thumbprint(); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.EnableProxy(ctx, org, "http://"+relayAddr+relay.DefaultBasePath); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Provision(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.AddCertificate(ctx, registry.CertificateRegistration{Organization: org, Certificate: cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	return Setup{Settings: store, CertDir: certDir, Tokens: onprem.NewSource(store, certDir), Registry: reg}
}
