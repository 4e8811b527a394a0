package registry

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestParseQuota(t *testing.T) {
	tests := []struct {
		in      string
		want    Quota
		problem string // in the error; empty: valid
	}{
		{in: "20000", want: Quota{Rate: 20000, Burst: 80000}},
		{in: "20000:50000", want: Quota{Rate: 20000, Burst: 50000}},
		{in: " 2.5 : 3 ", want: Quota{Rate: 2.5, Burst: 3}},
		{in: "0.1", want: Quota{Rate: 0.1, Burst: 1}},
		{in: "", problem: `rate "" is not a number`},
		{in: "fast", problem: `rate "fast" is not a number`},
		{in: "0", problem: "must be more than 0"},
		{in: "-5", problem: "must be more than 0"},
		{in: "NaN", problem: "must be more than 0"},
		{in: "Inf", problem: "at most 1000000"},
		{in: "2000000", problem: "at most 1000000"},
		{in: "100:", problem: `burst "" is not a whole number`},
		{in: "100:1.5", problem: `burst "1.5" is not a whole number`},
		{in: "100:0", problem: "burst 0 must be at least 1"},
		{in: "100:5000000", problem: "burst 5000000 must be 1 to 4000000"},
		{in: "100:200:300", problem: `burst "200:300" is not a whole number`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseQuota(tt.in)
			if tt.problem == "" {
				if err != nil || got != tt.want {
					t.Fatalf("ParseQuota(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.problem) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("ParseQuota(%q) = %+v, %v; want one line of ErrInvalid about %q", tt.in, got, err, tt.problem)
			}
		})
	}
}

func TestSetQuota(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	cert := newCert(t, "fabrikam.com")
	if _, _, err := s.AddCertificate(ctx, CertificateRegistration{Organization: "fabrikam.com", Certificate: cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	stored := func() *Quota {
		t.Helper()
		p, err := s.Partner(ctx, "fabrikam.com")
		if err != nil {
			t.Fatal(err)
		}
		return p.Quota
	}

	p, err := s.SetQuota(ctx, "Fabrikam.com", &Quota{Rate: 20000})
	if err != nil || p.Quota == nil || *p.Quota != (Quota{Rate: 20000, Burst: 80000}) {
		t.Fatalf("SetQuota: %+v, %v", p.Quota, err)
	}
	// Registering a certificate again keeps the quota.
	if _, _, err := s.AddCertificate(ctx, CertificateRegistration{Organization: "fabrikam.com", Certificate: cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	if q := stored(); q == nil || q.Rate != 20000 {
		t.Fatalf("quota after a certificate update: %+v", q)
	}

	// Bad input changes nothing.
	refused := []struct {
		name, org string
		quota     *Quota
		want      error
	}{
		{"zero rate", "fabrikam.com", &Quota{Rate: 0}, ErrInvalid},
		{"negative burst", "fabrikam.com", &Quota{Rate: 10, Burst: -1}, ErrInvalid},
		{"not a domain", "fabrikam", &Quota{Rate: 10}, ErrInvalid},
		{"not registered", "contoso.com", &Quota{Rate: 10}, ErrNotFound},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.SetQuota(ctx, tt.org, tt.quota); !errors.Is(err, tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("SetQuota(%s, %+v) = %v, want one line matching %v", tt.org, tt.quota, err, tt.want)
			}
			if q := stored(); q == nil || *q != (Quota{Rate: 20000, Burst: 80000}) {
				t.Fatalf("quota after a refused change: %+v", q)
			}
		})
	}
	if _, err := s.Partner(ctx, "contoso.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a quota created a partner: %v", err)
	}

	// nil: back to the relay's defaults.
	if p, err := s.SetQuota(ctx, "fabrikam.com", nil); err != nil || p.Quota != nil || stored() != nil {
		t.Fatalf("clearing the quota: %+v, %v", p.Quota, err)
	}
}

func TestPartnerCacheFollowsQuota(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openStore(t)
	cert := newCert(t, "fabrikam.com")
	if _, _, err := s.AddCertificate(ctx, CertificateRegistration{Organization: "fabrikam.com", Certificate: cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	cache, err := s.WatchPartners(ctx, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	has := func(want *Quota) func() bool {
		return func() bool {
			q, ok := cache.Quota("fabrikam.com")
			return ok == (want != nil) && (want == nil || q == *want)
		}
	}
	if !has(nil)() {
		t.Fatal("a partner without a quota of its own has one in the cache")
	}

	other := newCert(t, "contoso.com")
	set := func(q *Quota) func() error {
		return func() error { _, err := s.SetQuota(ctx, "fabrikam.com", q); return err }
	}
	steps := []struct {
		name    string
		change  func() error
		applied func() bool // when the watch has applied the change; nil: the quota is want
		want    *Quota
	}{
		{name: "set", change: set(&Quota{Rate: 300, Burst: 400}), want: &Quota{Rate: 300, Burst: 400}},
		{name: "changed", change: set(&Quota{Rate: 50}), want: &Quota{Rate: 50, Burst: 200}},
		// A registration edited by hand with a quota that is not valid:
		// the previous quota stays, and so does the partner. contoso.com's
		// registration, written after it, tells when the watch has seen it.
		{name: "not valid, kept", change: func() error {
			if err := s.putPartnerQuota(ctx, "fabrikam.com", json.RawMessage(`{"rate":-3}`)); err != nil {
				return err
			}
			_, _, err := s.AddCertificate(ctx, CertificateRegistration{Organization: "contoso.com", Certificate: other.X509.Raw})
			return err
		}, applied: func() bool { return cache.Len() == 2 }, want: &Quota{Rate: 50, Burst: 200}},
		{name: "cleared", change: set(nil)},
		{name: "set again", change: set(&Quota{Rate: 70, Burst: 1}), want: &Quota{Rate: 70, Burst: 1}},
		{name: "partner removed", change: func() error { _, err := s.RemovePartner(ctx, "fabrikam.com", ""); return err }},
	}
	for _, st := range steps {
		if err := st.change(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.applied == nil {
			st.applied = has(st.want)
		}
		waitFor(t, st.name, st.applied)
		if !has(st.want)() {
			q, ok := cache.Quota("fabrikam.com")
			t.Fatalf("%s: quota %+v (%v), want %+v", st.name, q, ok, st.want)
		}
	}
	if _, err := cache.PartnerByThumbprint(ctx, other.Thumbprint()); err != nil || cache.Len() != 1 {
		t.Fatalf("contoso.com should be the one partner left: %v, %d partners", err, cache.Len())
	}
}

// putPartnerQuota writes organization's registration with quota as raw
// JSON, unchecked, the way an operator editing the bucket by hand could.
func (s *Store) putPartnerQuota(ctx context.Context, organization string, quota json.RawMessage) error {
	return update(ctx, s.partners, organization, func(raw []byte, _ bool) ([]byte, error) {
		var p map[string]json.RawMessage
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		p["quota"] = quota
		p["whenChanged"] = json.RawMessage(`"2030-01-01T00:00:00Z"`)
		return json.Marshal(p)
	})
}
