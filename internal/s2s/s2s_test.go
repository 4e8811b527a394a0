package s2s_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/s2s"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

func TestSourceIssuesTokensTheRelayAccepts(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	store, err := settings.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := s2s.NewSource(store, dir)
	if _, err := src.Token(ctx); err == nil {
		t.Fatal("a token without any setup")
	}

	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "fabrikam.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2s.Save(dir, cert); err != nil {
		t.Fatal(err)
	}
	if err := s2s.Save(dir, cert); err == nil {
		t.Fatal("saving the same key twice succeeded")
	}
	if _, err := store.UpdateAuth(ctx, func(a *settings.Auth) error { a.CurrentCertificateThumbprint = cert.Thumbprint(); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.EnableProxy(ctx, "fabrikam.com", "https://relay.test/PushNotifications"); err != nil {
		t.Fatal(err)
	}
	raw, err := src.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	partners := tokens.NewRegistry()
	if err := partners.Put(tokens.Partner{Organization: "fabrikam.com", Realm: "fabrikam.com", Certificates: []tokens.RegisteredCert{{Cert: cert.X509}}}); err != nil {
		t.Fatal(err)
	}
	v, err := tokens.NewVerifier(tokens.VerifierOptions{PrincipalID: settings.DefaultRelayPrincipal, Host: "relay.test", Partners: partners})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("relay rejected the token: %v", err)
	}
	if claims.Organization != "fabrikam.com" {
		t.Fatalf("claims %+v", claims)
	}

	other, err := tokens.NewVerifier(tokens.VerifierOptions{PrincipalID: settings.DefaultRelayPrincipal, Host: "elsewhere.test", Partners: partners, Now: func() time.Time { return time.Now() }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Verify(ctx, raw); !errors.Is(err, tokens.ErrWrongAudience) {
		t.Fatalf("a token for relay.test verified at elsewhere.test: %v", err)
	}
}
