package onprem

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

func TestSourceIssuesTokensTheRelayAccepts(t *testing.T) {
	ctx := context.Background()
	_, store := openStore(t)
	dir := t.TempDir()
	if _, err := NewSource(store, dir).Token(ctx); err == nil {
		t.Fatal("a token without any setup")
	}
	cert := setUp(t, store, dir)
	if err := Save(dir, cert); err == nil {
		t.Fatal("saving the same key twice succeeded")
	}
	raw, err := NewSource(store, dir).Token(ctx)
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

// setUp saves a new certificate into dir and configures store to sign with
// it for relay.test, as pushctl auth new-certificate and proxy enable do.
func setUp(t *testing.T, store *settings.Store, dir string) *tokens.Certificate {
	t.Helper()
	ctx := context.Background()
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "fabrikam.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(dir, cert); err != nil {
		t.Fatal(err)
	}
	if _, err := store.UpdateAuth(ctx, func(a *settings.Auth) error { a.CurrentCertificateThumbprint = cert.Thumbprint(); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.EnableProxy(ctx, "fabrikam.com", "https://relay.test/PushNotifications"); err != nil {
		t.Fatal(err)
	}
	return cert
}

// openStore starts NATS and opens the settings.
func openStore(t *testing.T) (*broker.Conn, *settings.Store) {
	t.Helper()
	conn := brokertest.Start(t)
	store, err := settings.Open(context.Background(), conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	return conn, store
}

// TestSourceKeepsSigningWhileSettingsAreUnreadable closes the connection
// to NATS after a first token: the source must go on signing with the
// settings it read last rather than fail every push as unauthorized.
func TestSourceKeepsSigningWhileSettingsAreUnreadable(t *testing.T) {
	ctx := context.Background()
	conn, store := openStore(t)
	dir := t.TempDir()
	setUp(t, store, dir)
	src := NewSource(store, dir)
	src.refresh = 0 // reread the settings at every call
	if _, err := src.Token(ctx); err != nil {
		t.Fatal(err)
	}
	conn.NC.Close()
	if _, err := src.Token(ctx); err != nil {
		t.Fatalf("token while the settings are unreadable: %v", err)
	}
	if err := src.reload(ctx); err == nil {
		t.Fatal("reload succeeded without NATS; the test proves nothing")
	}
}
