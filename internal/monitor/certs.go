package monitor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/alerting"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

// DefaultCertCheckInterval is how often the signing certificates' expiry
// is checked.
const DefaultCertCheckInterval = time.Hour

// certRole is a signing certificate of the auth configuration.
type certRole struct {
	role       string // "current" or "next"
	thumbprint string
}

// certificateSignals checks the current and next signing certificates and
// returns one RuleCertificateExpiring signal per role: failing when the
// certificate expires within alerting.CertificateWarning of now. A role
// without a certificate passes, so that a rotation resolves the alert. It
// sets the expiry gauge of each certificate it could read.
func certificateSignals(ctx context.Context, store *settings.Store, certDir string, now time.Time, expiry *prometheus.GaugeVec) ([]alerting.Signal, error) {
	auth, err := store.Auth(ctx)
	if err != nil {
		return nil, err
	}
	dir := onprem.CertDir(auth, certDir)
	var out []alerting.Signal
	var errs []error
	for _, c := range []certRole{{"current", auth.CurrentCertificateThumbprint}, {"next", auth.NextCertificateThumbprint}} {
		sig := alerting.Signal{Rule: alerting.RuleCertificateExpiring, Labels: map[string]string{"certificate": c.role}}
		if c.thumbprint == "" {
			expiry.DeleteLabelValues(c.role)
			out = append(out, sig)
			continue
		}
		cert, err := onprem.Load(dir, c.thumbprint)
		if err != nil {
			errs = append(errs, fmt.Errorf("checking the %s certificate: %w", c.role, err))
			continue
		}
		notAfter := cert.X509.NotAfter
		expiry.WithLabelValues(c.role).Set(float64(notAfter.Unix()))
		left := notAfter.Sub(now)
		sig.Failing = left < alerting.CertificateWarning
		switch {
		case left <= 0:
			sig.Detail = fmt.Sprintf("the %s S2S certificate %s expired on %s: the relay refuses its tokens", c.role, c.thumbprint, notAfter.UTC().Format(time.RFC3339))
		default:
			sig.Detail = fmt.Sprintf("the %s S2S certificate %s expires on %s, in %d day(s)", c.role, c.thumbprint, notAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))
		}
		out = append(out, sig)
	}
	return out, errors.Join(errs...)
}
