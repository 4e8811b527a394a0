package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

func authCommand() command {
	return group("auth", "S2S OAuth certificate and configuration (like Get-AuthConfig)",
		command{name: "new-certificate", summary: "create a self-signed S2S certificate and print its thumbprint", run: runAuthNewCertificate},
		command{name: "import", summary: "import an existing certificate and key (PEM or PKCS#12)", run: runAuthImport},
		command{name: "show", summary: "print the auth configuration", run: runAuthShow},
		command{name: "export", summary: "export the current certificate as a DER .cer file for the relay", run: runAuthExport},
		command{name: "rotate", summary: "make the next certificate the current one", run: runAuthRotate},
		command{name: "set-server", summary: "read the relay's auth metadata document", run: runAuthSetServer},
	)
}

func runAuthNewCertificate(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("auth new-certificate", "pushctl auth new-certificate --domain DOMAIN [--out DIR] [flags]", `
Creates a self-signed RSA certificate for S2S OAuth (like Exchange's
"Exchange S2S OAuth" certificate), writes it and its private key (mode 0600)
into --out, named by thumbprint, and prints the thumbprint.

The first certificate becomes the current one, which signs tokens. When a
current one exists, the new one becomes the next certificate: register it
with the relay (pushctl relay partner add), then run pushctl auth rotate.`)
	domain := fs.String("domain", "", "the organization's domain, the certificate's subject (required)")
	out := fs.String("out", "", "folder for the certificate and key files (default: the folder of the configured certificates, else "+onprem.DefaultCertDir+")")
	bits := fs.Int("bits", tokens.DefaultKeyBits, "RSA key size in bits (at least 2048)")
	validity := fs.Duration("validity", tokens.DefaultValidity, "how long the certificate is valid")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *domain == "" {
		return fmt.Errorf("%w: --domain is required", errUsage)
	}
	cert, err := tokens.NewCertificate(tokens.CertificateOptions{Domain: *domain, Bits: *bits, Validity: *validity})
	if err != nil {
		return err
	}
	return installCertificate(ctx, c, o, *out, cert)
}

func runAuthImport(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("auth import", "pushctl auth import (--cert FILE --key FILE | --pfx FILE [--password P]) [--out DIR] [flags]", `
Imports an existing S2S certificate with its private key, from PEM files or
a PKCS#12 (.pfx) file, into --out, named by thumbprint. Like a new
certificate, it becomes the current one if there is none, and the next one
otherwise. The key must be RSA of at least 2048 bits.`)
	certFile := fs.String("cert", "", "PEM certificate file")
	keyFile := fs.String("key", "", "PEM private key file (PKCS#1 or PKCS#8, unencrypted)")
	pfx := fs.String("pfx", "", "PKCS#12 file holding the certificate and its key")
	password := fs.String("password", "", "password of the PKCS#12 file")
	out := fs.String("out", "", "folder for the certificate and key files (default: the folder of the configured certificates, else "+onprem.DefaultCertDir+")")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	var (
		cert *tokens.Certificate
		err  error
	)
	switch {
	case *pfx != "" && *certFile == "" && *keyFile == "":
		cert, err = tokens.LoadPKCS12(*pfx, *password)
	case *pfx == "" && *certFile != "" && *keyFile != "":
		cert, err = tokens.LoadPEM(*certFile, *keyFile)
	default:
		return fmt.Errorf("%w: give either --cert and --key, or --pfx", errUsage)
	}
	if err != nil {
		return err
	}
	return installCertificate(ctx, c, o, *out, cert)
}

// installCertificate saves cert and its key into dir and makes it the
// current certificate, or the next one when a current one exists.
func installCertificate(ctx context.Context, c *cli, o *broker.Options, dir string, cert *tokens.Certificate) error {
	if cert.Key == nil {
		return tokens.ErrNoPrivateKey
	}
	if bits := cert.Key.N.BitLen(); bits < tokens.MinKeyBits {
		return fmt.Errorf("%w: the key has %d bits, at least %d are needed", tokens.ErrKeyTooSmall, bits, tokens.MinKeyBits)
	}
	conn, store, err := openSettings(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	auth, err := store.Auth(ctx)
	if err != nil {
		return err
	}
	dir, err = filepath.Abs(onprem.CertDir(auth, dir))
	if err != nil {
		return err
	}
	if err := sameCertificateDir(auth, dir); err != nil {
		return err
	}
	if err := onprem.Save(dir, cert); err != nil {
		return err
	}
	role := "current"
	_, err = store.UpdateAuth(ctx, func(a *settings.Auth) error {
		if err := sameCertificateDir(*a, dir); err != nil {
			return err
		}
		a.CertificateDir = dir
		if a.CurrentCertificateThumbprint == "" {
			a.CurrentCertificateThumbprint = cert.Thumbprint()
		} else {
			a.NextCertificateThumbprint = cert.Thumbprint()
			role = "next"
		}
		return nil
	})
	if err != nil {
		certPath, keyPath := onprem.Paths(dir, cert.Thumbprint())
		_ = os.Remove(certPath)
		_ = os.Remove(keyPath)
		return err
	}
	if err := printFields(c.stdout, [][2]string{
		{"Thumbprint", cert.Thumbprint()},
		{"Subject", cert.X509.Subject.String()},
		{"NotAfter", formatTime(cert.X509.NotAfter)},
		{"Role", role},
		{"Folder", dir},
	}); err != nil {
		return err
	}
	fmt.Fprintln(c.stderr, nextSteps(role))
	return nil
}

// nextSteps tells the operator what to do with a certificate just
// installed in role ("current" or "next").
func nextSteps(role string) string {
	if role == "next" {
		return "Next: pushctl auth export --next --out OAuthCert-next.cer, register it at the relay " +
			"(pushctl relay partner add --organization <domain> --certificate OAuthCert-next.cer), then pushctl auth rotate"
	}
	return "Next: pushctl auth export --out OAuthCert.cer, then register it at the relay: " +
		"pushctl relay partner add --organization <domain> --certificate OAuthCert.cer"
}

// sameCertificateDir refuses to move the certificate folder away from the
// current certificate: the current and next certificates live in one
// folder, which signs the tokens.
func sameCertificateDir(a settings.Auth, dir string) error {
	if a.CurrentCertificateThumbprint == "" || a.CertificateDir == "" {
		return nil
	}
	cur, err := filepath.Abs(a.CertificateDir)
	if err != nil || cur == dir {
		return nil
	}
	return fmt.Errorf("%w: --out %s is not the folder %s that holds the current certificate; omit --out, or give that folder", errUsage, dir, a.CertificateDir)
}

func runAuthShow(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("auth show", "pushctl auth show [flags]", `
Prints the auth configuration, like Exchange's Get-AuthConfig, with the
current certificate's expiry.`)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	return withAuth(ctx, o, func(a settings.Auth) error {
		if *asJSON {
			return printJSON(c.stdout, a)
		}
		expiry := ""
		if cert, err := onprem.Load(a.CertificateDir, a.CurrentCertificateThumbprint); err == nil {
			expiry = formatTime(cert.X509.NotAfter)
		}
		return printFields(c.stdout, [][2]string{
			{"CurrentCertificateThumbprint", a.CurrentCertificateThumbprint},
			{"CurrentCertificateNotAfter", expiry},
			{"NextCertificateThumbprint", a.NextCertificateThumbprint},
			{"ServiceName", a.ServiceName},
			{"Realm", a.Realm},
			{"RelayPrincipal", a.RelayPrincipal},
			{"AuthMetadataUrl", a.AuthMetadataURL},
			{"CertificateFolder", a.CertificateDir},
			{"WhenChanged", formatTime(a.WhenChanged)},
		})
	})
}

func runAuthExport(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("auth export", "pushctl auth export --out FILE.cer [--next] [flags]", `
Exports the public part of the current (or, with --next, the next) S2S
certificate as a DER .cer file, for the relay's operator to register.`)
	out := fs.String("out", "OAuthCert.cer", "file to write")
	next := fs.Bool("next", false, "export the next certificate instead of the current one")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	return withAuth(ctx, o, func(a settings.Auth) error {
		thumb := a.CurrentCertificateThumbprint
		if *next {
			thumb = a.NextCertificateThumbprint
		}
		cert, err := onprem.Load(a.CertificateDir, thumb)
		if err != nil {
			return err
		}
		if err := cert.ExportDER(*out); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "Exported %s to %s\n", cert.Thumbprint(), *out)
		return nil
	})
}

func runAuthRotate(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("auth rotate", "pushctl auth rotate [flags]", `
Makes the next certificate the current one: tokens are signed with it from
now on. Register it at the relay first, or the relay will reject them.`)
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	return withSettings(ctx, o, func(s *settings.Store) error {
		a, err := s.UpdateAuth(ctx, func(a *settings.Auth) error {
			if a.NextCertificateThumbprint == "" {
				return fmt.Errorf("no next certificate: create one with pushctl auth new-certificate")
			}
			if _, err := onprem.Load(a.CertificateDir, a.NextCertificateThumbprint); err != nil {
				return err
			}
			a.CurrentCertificateThumbprint, a.NextCertificateThumbprint = a.NextCertificateThumbprint, ""
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "CurrentCertificateThumbprint : %s\n", a.CurrentCertificateThumbprint)
		return nil
	})
}

func runAuthSetServer(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("auth set-server", "pushctl auth set-server --metadata-url URL [flags]", `
Reads the relay's auth metadata document (JSON) and saves the relay's
principal id (the part of its issuer before "@"), so that tokens name the
relay as their audience. The relay serves it at
<relay URI>/metadata/json/1.`)
	metadataURL := fs.String("metadata-url", "", "URL of the relay's auth metadata document (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the document")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *metadataURL == "" {
		return fmt.Errorf("%w: --metadata-url is required", errUsage)
	}
	md, err := tokens.FetchMetadata(ctx, &http.Client{Timeout: *timeout}, *metadataURL)
	if err != nil {
		return err
	}
	principal, _, _ := strings.Cut(md.Issuer, "@")
	if principal == "" {
		return fmt.Errorf("the metadata document at %s names no issuer (<relay principal>@<realm>)", *metadataURL)
	}
	return withSettings(ctx, o, func(s *settings.Store) error {
		a, err := s.UpdateAuth(ctx, func(a *settings.Auth) error {
			a.AuthMetadataURL = *metadataURL
			a.RelayPrincipal = principal
			return nil
		})
		if err != nil {
			return err
		}
		return printFields(c.stdout, [][2]string{
			{"AuthMetadataUrl", a.AuthMetadataURL},
			{"RelayPrincipal", a.RelayPrincipal},
			{"RelayRealm", md.Realm},
			{"RelayIssuer", md.Issuer},
		})
	})
}

// withAuth connects to NATS, reads the auth configuration and runs f.
func withAuth(ctx context.Context, o *broker.Options, f func(settings.Auth) error) error {
	return withSettings(ctx, o, func(s *settings.Store) error {
		a, err := s.Auth(ctx)
		if err != nil {
			return err
		}
		return f(a)
	})
}

// openSettings connects and opens the settings store; the caller closes conn.
func openSettings(ctx context.Context, o *broker.Options) (*broker.Conn, *settings.Store, error) {
	return connectOpen(ctx, o, settings.Open)
}
