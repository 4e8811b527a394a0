// Package sourcestest holds what the tests of several sources share: the
// check of a Counter's counts, the parsing of a counter's flags, and an
// app certificate on disk for app-only credentials (EWS and Graph).
// Nothing here is fit for production.
package sourcestest

import (
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// Count is a sources.Count as a test expects it: Unread without an error
// when Err and Text are unset; otherwise an error that matches Err
// (errors.Is) when Err is set and contains Text.
type Count struct {
	Unread int
	Err    error
	Text   string
}

// CheckCounts checks got, the counts of a Counter, against want, one by
// one.
func CheckCounts(t testing.TB, got []sources.Count, want []Count) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d counts, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		switch {
		case w.Err == nil && w.Text == "":
			if g.Err != nil || g.Unread != w.Unread {
				t.Errorf("count %d: %d, %v; want %d", i, g.Unread, g.Err, w.Unread)
			}
		case g.Err == nil || (w.Err != nil && !errors.Is(g.Err, w.Err)) || !strings.Contains(g.Err.Error(), w.Text):
			t.Errorf("count %d: error %v, want %v containing %q", i, g.Err, w.Err, w.Text)
		}
	}
}

// CounterSettings are a source's counter flags, registered on a flag set.
type CounterSettings[C any] interface {
	// CounterEnabled reports whether the flags turn the counter on.
	CounterEnabled() bool
	// Counter builds the counter the flags describe.
	Counter() (C, error)
}

// ParseCounterFlags registers a counter's flags on a new flag set
// (register), parses args and builds the counter, failing the test when
// the counter is on before args are parsed or off after. When wantErr is
// "" the counter must build; otherwise the error must contain wantErr,
// and ok is false.
func ParseCounterFlags[S CounterSettings[C], C any](t testing.TB, register func(*flag.FlagSet) S, args []string, wantErr string) (settings S, counter C, ok bool) {
	t.Helper()
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	settings = register(fs)
	if settings.CounterEnabled() {
		t.Fatal("the counter is enabled before its flags are parsed")
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if !settings.CounterEnabled() {
		t.Fatal("the counter is not enabled")
	}
	counter, err := settings.Counter()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want %q", err, wantErr)
		}
		return settings, counter, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return settings, counter, true
}

// WriteAppCertificate writes a new certificate of an app and its key, as
// PEM, to app.pem and app.key in dir and returns their paths.
func WriteAppCertificate(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: "pushproxy.test"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "app.pem"), filepath.Join(dir, "app.key")
	if err := cert.WritePEM(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
