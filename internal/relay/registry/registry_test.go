package registry

import (
	"context"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/logtest"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// waitFor polls cond until it holds, failing the test after a generous
// timeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newCert makes a public S2S certificate for domain.
func newCert(t *testing.T, domain string) *tokens.Certificate {
	t.Helper()
	c, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openStore(t *testing.T) *Store {
	t.Helper()
	conn := brokertest.Start(t)
	s, err := Provision(context.Background(), conn.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPartnerRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	current, next, other := newCert(t, "fabrikam.com"), newCert(t, "fabrikam.com"), newCert(t, "contoso.com")

	p, c, err := s.AddCertificate(ctx, CertificateRegistration{Organization: "Fabrikam.COM", Certificate: current.X509.Raw})
	if err != nil {
		t.Fatal(err)
	}
	if p.Organization != "fabrikam.com" || p.Realm != "fabrikam.com" || len(p.Certificates) != 1 || c.Thumbprint != current.Thumbprint() {
		t.Fatalf("first certificate: %+v %+v", p, c)
	}
	if c.Status(time.Now()) != StatusActive {
		t.Fatalf("status %s", c.Status(time.Now()))
	}

	// The next certificate, PEM encoded, accepted from a date: both are kept.
	start := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: next.X509.Raw})
	p, c, err = s.AddCertificate(ctx, CertificateRegistration{Organization: "fabrikam.com", Realm: "realm-1", Certificate: pemData, StartDate: start})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Certificates) != 2 || p.Realm != "realm-1" || !c.StartDate.Equal(start) || c.Status(time.Now()) != StatusPending {
		t.Fatalf("next certificate: %+v", p)
	}

	// Registering the same certificate again updates it, keeping the realm.
	end := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	p, _, err = s.AddCertificate(ctx, CertificateRegistration{Organization: "fabrikam.com", Certificate: current.X509.Raw, EndDate: end})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Certificates) != 2 || p.Realm != "realm-1" || !p.Certificates[0].EndDate.Equal(end) {
		t.Fatalf("update: %+v", p)
	}

	// A certificate names exactly one organisation.
	_, _, err = s.AddCertificate(ctx, CertificateRegistration{Organization: "contoso.com", Certificate: current.X509.Raw})
	if !errors.Is(err, tokens.ErrDuplicateCertificate) {
		t.Fatalf("duplicate across organizations: %v", err)
	}
	if _, _, err := s.AddCertificate(ctx, CertificateRegistration{Organization: "contoso.com", Certificate: other.X509.Raw}); err != nil {
		t.Fatal(err)
	}

	got, err := s.Partners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Organization != "contoso.com" || got[1].Organization != "fabrikam.com" {
		t.Fatalf("list: %+v", got)
	}
	tp, err := got[1].TokensPartner()
	if err != nil || len(tp.Certificates) != 2 || !tp.Certificates[1].NotBefore.Equal(start) {
		t.Fatalf("tokens partner: %+v %v", tp, err)
	}

	left, err := s.RemovePartner(ctx, "fabrikam.com", current.Thumbprint())
	if err != nil || len(left.Certificates) != 1 || left.Certificates[0].Thumbprint != next.Thumbprint() {
		t.Fatalf("remove one certificate: %+v %v", left, err)
	}
	if _, err := s.RemovePartner(ctx, "fabrikam.com", current.Thumbprint()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove a removed certificate: %v", err)
	}
	if left, err := s.RemovePartner(ctx, "fabrikam.com", ""); err != nil || left.Organization != "" {
		t.Fatalf("remove partner: %+v %v", left, err)
	}
	if _, err := s.Partner(ctx, "fabrikam.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get removed partner: %v", err)
	}
	if _, err := s.RemovePartner(ctx, "nobody.example", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove unknown partner: %v", err)
	}
}

func TestAddCertificateRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	cert := newCert(t, "fabrikam.com")
	tests := []struct {
		name string
		reg  CertificateRegistration
	}{
		{"not a domain", CertificateRegistration{Organization: "fabrikam", Certificate: cert.X509.Raw}},
		{"not a certificate", CertificateRegistration{Organization: "fabrikam.com", Certificate: []byte("hello")}},
		{"realm with @", CertificateRegistration{Organization: "fabrikam.com", Realm: "a@b", Certificate: cert.X509.Raw}},
		{"end before start", CertificateRegistration{Organization: "fabrikam.com", Certificate: cert.X509.Raw,
			StartDate: time.Now().Add(48 * time.Hour), EndDate: time.Now().Add(24 * time.Hour)}},
		{"end in the past", CertificateRegistration{Organization: "fabrikam.com", Certificate: cert.X509.Raw, EndDate: time.Now().Add(-time.Minute)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.AddCertificate(ctx, tt.reg); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
	if got, _ := s.Partners(ctx); len(got) != 0 {
		t.Fatalf("a refused registration was stored: %+v", got)
	}
}

func TestAppRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	dir := t.TempDir()
	apnsApp := App{AppID: "com.example.mail", Provider: KindAPNs, APNs: &APNs{
		KeyFile: filepath.Join(dir, "AuthKey.p8"), KeyID: "ABC123DEFG", TeamID: "TEAM123456", Topic: "com.example.mail", Environment: APNsSandbox,
	}}
	saved, err := s.AddApp(ctx, apnsApp, false)
	if err != nil {
		t.Fatal(err)
	}
	if saved.WhenCreated.IsZero() {
		t.Fatal("no creation time")
	}
	if _, err := s.AddApp(ctx, apnsApp, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second add without replace: %v", err)
	}
	apnsApp.APNs.Environment = APNsProduction
	replaced, err := s.AddApp(ctx, apnsApp, true)
	if err != nil || !replaced.WhenCreated.Equal(saved.WhenCreated) {
		t.Fatalf("replace: %+v %v", replaced, err)
	}
	if _, err := s.AddApp(ctx, App{AppID: "demo", Provider: KindLog}, false); err != nil {
		t.Fatal(err)
	}
	apps, err := s.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(apps) != 2 || apps[0].AppID != "com.example.mail" || apps[0].APNs.Environment != APNsProduction || apps[1].Provider != KindLog {
		t.Fatalf("list: %+v", apps)
	}
	if err := s.RemoveApp(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveApp(ctx, "demo"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if _, err := s.App(ctx, "demo"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get removed: %v", err)
	}
}

func TestAppValidate(t *testing.T) {
	abs := filepath.Join(t.TempDir(), "key")
	apns := func(change func(*APNs)) App {
		c := &APNs{KeyFile: abs, KeyID: "K", TeamID: "T", Topic: "t", Environment: APNsSandbox}
		change(c)
		return App{AppID: "a", Provider: KindAPNs, APNs: c}
	}
	tests := []struct {
		name string
		app  App
		ok   bool
	}{
		{"log", App{AppID: "demo", Provider: KindLog}, true},
		{"apns", apns(func(*APNs) {}), true},
		{"apns relative key", apns(func(c *APNs) { c.KeyFile = "AuthKey.p8" }), false},
		{"apns no environment", apns(func(c *APNs) { c.Environment = "" }), false},
		{"apns bad host", apns(func(c *APNs) { c.Host = "ftp://x" }), false},
		{"apns settings missing", App{AppID: "a", Provider: KindAPNs}, false},
		{"fcm", App{AppID: "a", Provider: KindFCM, FCM: &FCM{CredentialsFile: abs}}, true},
		{"fcm with apns settings", App{AppID: "a", Provider: KindFCM, FCM: &FCM{CredentialsFile: abs}, APNs: &APNs{}}, false},
		{"webpush", App{AppID: "a", Provider: KindWebPush, WebPush: &WebPush{PrivateKeyFile: abs, Subject: "mailto:ops@example.com"}}, true},
		{"webpush bad subject", App{AppID: "a", Provider: KindWebPush, WebPush: &WebPush{PrivateKeyFile: abs, Subject: "ops"}}, false},
		{"unknown provider", App{AppID: "a", Provider: "wns"}, false},
		{"empty appId", App{Provider: KindLog}, false},
		{"reserved appId", App{AppID: "MonitoringProbeAppId", Provider: KindLog}, false},
		{"appId with space", App{AppID: "my app", Provider: KindLog}, false},
		{"appId with double dot", App{AppID: "a..b", Provider: KindLog}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.app.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestParseDate(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2027-01-31", time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC), true},
		{"2027-01-31T08:30", time.Date(2027, 1, 31, 8, 30, 0, 0, time.UTC), true},
		{"2027-01-31T08:30:15", time.Date(2027, 1, 31, 8, 30, 15, 0, time.UTC), true},
		{"2027-01-31T08:30:15+02:00", time.Date(2027, 1, 31, 6, 30, 15, 0, time.UTC), true},
		{"31/01/2027", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := ParseDate(tt.in)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ParseDate(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func TestPartnerCacheFollowsChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openStore(t)
	before, after := newCert(t, "fabrikam.com"), newCert(t, "contoso.com")
	if _, _, err := s.AddCertificate(ctx, CertificateRegistration{Organization: "fabrikam.com", Certificate: before.X509.Raw}); err != nil {
		t.Fatal(err)
	}

	cache, err := s.WatchPartners(ctx, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the watch: there as soon as WatchPartners returns.
	p, err := cache.PartnerByThumbprint(ctx, before.Thumbprint())
	if err != nil || p.Organization != "fabrikam.com" || cache.Len() != 1 {
		t.Fatalf("initial load: %+v %v", p, err)
	}
	if _, err := cache.PartnerByThumbprint(ctx, after.Thumbprint()); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("unregistered certificate: %v", err)
	}

	// Registered later, on another "replica" (the same bucket).
	if _, _, err := s.AddCertificate(ctx, CertificateRegistration{Organization: "contoso.com", Realm: "contoso-realm", Certificate: after.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new partner in the cache", func() bool {
		p, err := cache.PartnerByThumbprint(ctx, after.Thumbprint())
		return err == nil && p.Realm == "contoso-realm"
	})
	if _, err := s.RemovePartner(ctx, "fabrikam.com", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed partner to leave the cache", func() bool {
		_, err := cache.PartnerByThumbprint(ctx, before.Thumbprint())
		return errors.Is(err, tokens.ErrUnknownKey) && cache.Len() == 1
	})
	if err := cache.Check(ctx); err != nil {
		t.Fatalf("watch should be live: %v", err)
	}
	cancel()
	waitFor(t, "the watch to end", func() bool { return cache.Check(context.Background()) != nil })
}

func TestWatchApps(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openStore(t)
	if _, err := s.AddApp(ctx, App{AppID: "first", Provider: KindLog}, false); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen = map[string]*App{}
	)
	state := func(id string) (*App, bool) {
		mu.Lock()
		defer mu.Unlock()
		a, ok := seen[id]
		return a, ok
	}
	logs := &logtest.Buffer{}
	w, err := s.WatchApps(ctx, zerolog.New(logs), func(id string, a *App) {
		mu.Lock()
		defer mu.Unlock()
		seen[id] = a
	})
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := state("first"); !ok || a == nil || a.Provider != KindLog {
		t.Fatalf("initial app not applied before WatchApps returned: %v", a)
	}
	if _, err := s.AddApp(ctx, App{AppID: "second", Provider: KindLog}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the added app", func() bool { a, ok := state("second"); return ok && a != nil })
	if err := s.RemoveApp(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed app", func() bool { a, ok := state("first"); return ok && a == nil })
	if err := w.Check(ctx); err != nil {
		t.Fatal(err)
	}
	// Each change after start is logged, saying what changed.
	for _, want := range []string{`"key":"second","change":"changed"`, `"key":"first","change":"removed"`} {
		waitFor(t, "the log line "+want, func() bool { return strings.Contains(logs.String(), want) })
	}
}

func TestAppServes(t *testing.T) {
	tests := []struct {
		name    string
		app     App
		org     string
		wantErr string
	}{
		{"bound organization", App{AppID: "a", Provider: KindAPNs, Organizations: []string{"contoso.com", "fabrikam.com"}}, "fabrikam.com", ""},
		{"another organization", App{AppID: "a", Provider: KindAPNs, Organizations: []string{"contoso.com"}}, "fabrikam.com", "not bound to organization fabrikam.com"},
		{"unbound real app", App{AppID: "a", Provider: KindFCM}, "fabrikam.com", "pushctl relay app bind --app-id a --organization fabrikam.com"},
		{"unbound log app", App{AppID: "a", Provider: KindLog}, "fabrikam.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.app.Serves(tt.org)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Serves = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNotBound) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Serves = %v, want ErrNotBound saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestBindApp(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	if _, err := s.AddApp(ctx, App{AppID: "demo", Provider: KindLog, Organizations: []string{"Fabrikam.com", "fabrikam.com"}}, false); err != nil {
		t.Fatal(err)
	}
	a, err := s.BindApp(ctx, "demo", []string{"contoso.com"})
	if err != nil || strings.Join(a.Organizations, ",") != "contoso.com,fabrikam.com" {
		t.Fatalf("BindApp = %+v, %v", a, err)
	}
	if got, err := s.App(ctx, "demo"); err != nil || len(got.Organizations) != 2 {
		t.Fatalf("stored %+v %v", got, err)
	}
	if _, err := s.BindApp(ctx, "nope", []string{"contoso.com"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("BindApp(unknown) = %v", err)
	}
	if _, err := s.BindApp(ctx, "demo", nil); err == nil {
		t.Fatal("BindApp without organizations succeeded")
	}
}
