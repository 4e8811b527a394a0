package relay

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// certCheckInterval is how often the TLS files are checked for changes.
const certCheckInterval = time.Minute

// certReloader serves a TLS certificate from files and loads them again
// when they change (a renewed certificate), checking at most once a minute.
// A renewal that fails to load is logged and the previous certificate
// stays in use.
type certReloader struct {
	certFile, keyFile string
	log               zerolog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

// newCertReloader loads the certificate and key, failing if they do not.
func newCertReloader(certFile, keyFile string, log zerolog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(time.Now()); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads the files; r.mu must be held or r not yet shared.
func (r *certReloader) load(now time.Time) error {
	mod, err := r.lastChange()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("loading TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.modTime, r.checked = &cert, mod, now
	return nil
}

// lastChange is the later modification time of the two files.
func (r *certReloader) lastChange() (time.Time, error) {
	var last time.Time
	for _, name := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return time.Time{}, fmt.Errorf("reading TLS file: %w", err)
		}
		if fi.ModTime().After(last) {
			last = fi.ModTime()
		}
	}
	return last, nil
}

// get implements tls.Config.GetCertificate.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) >= certCheckInterval {
		r.checked = now
		if mod, err := r.lastChange(); err == nil && !mod.Equal(r.modTime) {
			if err := r.load(now); err != nil {
				r.log.Error().Err(err).Msg("TLS certificate changed but does not load; still serving the previous one")
			} else {
				r.log.Info().Str("file", r.certFile).Msg("TLS certificate reloaded")
			}
		}
	}
	return r.cert, nil
}
