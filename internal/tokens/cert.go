package tokens

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Certificate defaults and limits.
const (
	// MinKeyBits is the smallest RSA key accepted anywhere in this package.
	MinKeyBits = 2048
	// MaxKeyBits is the largest RSA key NewCertificate generates.
	MaxKeyBits = 8192
	// DefaultKeyBits is the key size NewCertificate uses when none is given.
	DefaultKeyBits = 2048
	// DefaultValidity is how long a new certificate is valid when no
	// validity is given.
	DefaultValidity = 5 * 365 * 24 * time.Hour
	// DefaultFriendlyName labels new certificates, after Exchange's
	// "Exchange S2S OAuth".
	DefaultFriendlyName = "pushproxy S2S OAuth"
)

// backdate is how far before its creation a new certificate becomes valid,
// so that a peer whose clock is a little behind accepts it at once.
const backdate = 10 * time.Minute

// Certificate is an S2S signing certificate: an X.509 certificate with an
// RSA public key of at least MinKeyBits and, on the signing side, its
// private key.
type Certificate struct {
	// X509 is the parsed certificate.
	X509 *x509.Certificate
	// Key is the private key; nil when only the public certificate is
	// loaded (as on the relay).
	Key *rsa.PrivateKey
	// FriendlyName is a human label for the certificate. NewCertificate
	// sets it; the file formats read here do not carry it, so it is empty
	// for loaded certificates.
	FriendlyName string
}

// CertificateOptions configures NewCertificate.
type CertificateOptions struct {
	// Domain is the organisation's domain, used as the subject common name
	// (CN=<domain>). Required.
	Domain string
	// FriendlyName labels the certificate; DefaultFriendlyName when empty.
	FriendlyName string
	// Bits is the RSA key size; DefaultKeyBits when zero. Sizes below
	// MinKeyBits fail with ErrKeyTooSmall.
	Bits int
	// Validity is how long the certificate is valid from now;
	// DefaultValidity when zero.
	Validity time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Rand is the randomness for the serial number; crypto/rand when nil.
	// The key itself always comes from the system's secure source, as the
	// Go runtime ignores custom readers for key generation.
	Rand io.Reader
}

// NewCertificate generates an RSA key and a self-signed certificate for it,
// with subject CN=<Domain> and a subject key identifier.
func NewCertificate(opts CertificateOptions) (*Certificate, error) {
	if opts.Bits == 0 {
		opts.Bits = DefaultKeyBits
	}
	if opts.Bits < MinKeyBits {
		return nil, fmt.Errorf("creating certificate with a %d-bit key: %w", opts.Bits, ErrKeyTooSmall)
	}
	if opts.Bits > MaxKeyBits {
		return nil, fmt.Errorf("creating certificate with a %d-bit key: the maximum is %d bits", opts.Bits, MaxKeyBits)
	}
	key, err := rsa.GenerateKey(rand.Reader, opts.Bits)
	if err != nil {
		return nil, fmt.Errorf("generating RSA key: %w", err)
	}
	return selfSign(key, opts)
}

// selfSign issues a self-signed certificate for key; opts.Bits is ignored.
func selfSign(key *rsa.PrivateKey, opts CertificateOptions) (*Certificate, error) {
	domain := strings.TrimSpace(opts.Domain)
	if domain == "" {
		return nil, errors.New("creating certificate: a domain is required")
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultValidity
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("creating certificate: validity %s is negative", opts.Validity)
	}
	if opts.FriendlyName == "" {
		opts.FriendlyName = DefaultFriendlyName
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	random := opts.Rand
	if random == nil {
		random = rand.Reader
	}
	serial, err := rand.Int(random, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("creating certificate serial number: %w", err)
	}
	serial.Add(serial, big.NewInt(1)) // positive and non-zero, as RFC 5280 asks
	t := now()
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domain},
		NotBefore:             t.Add(-backdate),
		NotAfter:              t.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		SubjectKeyId:          subjectKeyID(&key.PublicKey),
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	der, err := x509.CreateCertificate(random, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing new certificate: %w", err)
	}
	return &Certificate{X509: cert, Key: key, FriendlyName: opts.FriendlyName}, nil
}

// subjectKeyID is the RFC 5280 (section 4.2.1.2, method 1) key identifier:
// the SHA-1 of the subjectPublicKey bits, which for RSA are the PKCS #1
// RSAPublicKey encoding.
func subjectKeyID(pub *rsa.PublicKey) []byte {
	sum := sha1.Sum(x509.MarshalPKCS1PublicKey(pub))
	return sum[:]
}

// String describes the certificate (subject, thumbprint, validity) without
// any key material, so a certificate is safe to print.
func (c *Certificate) String() string {
	key := "public only"
	if c.Key != nil {
		key = "with private key"
	}
	return fmt.Sprintf("%s thumbprint %s valid %s..%s (%s)", c.X509.Subject, c.Thumbprint(),
		c.X509.NotBefore.UTC().Format(time.RFC3339), c.X509.NotAfter.UTC().Format(time.RFC3339), key)
}

// MarshalJSON describes the certificate like String, as a JSON object, so
// that a structured logger never writes the private key.
func (c *Certificate) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Subject       string    `json:"subject"`
		Thumbprint    string    `json:"thumbprint"`
		NotBefore     time.Time `json:"notBefore"`
		NotAfter      time.Time `json:"notAfter"`
		HasPrivateKey bool      `json:"hasPrivateKey"`
	}{c.X509.Subject.String(), c.Thumbprint(), c.X509.NotBefore.UTC(), c.X509.NotAfter.UTC(), c.Key != nil})
}

// Thumbprint returns the SHA-1 of the DER certificate as 40 upper-case hex
// characters, as Exchange shows CurrentCertificateThumbprint.
func (c *Certificate) Thumbprint() string { return thumbprint(c.X509) }

// X5T returns the base64url (unpadded) SHA-1 of the DER certificate, the
// value of a token's x5t header.
func (c *Certificate) X5T() string {
	sum := sha1.Sum(c.X509.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// thumbprint is the upper-case hex SHA-1 of cert's DER encoding.
func thumbprint(cert *x509.Certificate) string {
	sum := sha1.Sum(cert.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// LoadPEM loads a certificate from the PEM file certPath and, unless keyPath
// is empty, its private key from the PEM file keyPath (PKCS #8 "PRIVATE
// KEY" or PKCS #1 "RSA PRIVATE KEY", unencrypted). Both may be the same
// file. The key must belong to the certificate.
func LoadPEM(certPath, keyPath string) (*Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("loading certificate: %w", err)
	}
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s: %w", certPath, err)
	}
	var key *rsa.PrivateKey
	if keyPath != "" {
		keyPEM, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, fmt.Errorf("loading private key: %w", err)
		}
		if key, err = parsePrivateKey(keyPEM); err != nil {
			return nil, fmt.Errorf("loading private key %s: %w", keyPath, err)
		}
	}
	c, err := newCertificate(cert, key)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s: %w", certPath, err)
	}
	return c, nil
}

// LoadPKCS12 loads a certificate and its private key from a PKCS #12 file
// (.pfx, .p12), such as one exported from Windows or written by openssl
// pkcs12 -export.
func LoadPKCS12(path, password string) (*Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading PKCS #12 file: %w", err)
	}
	priv, cert, _, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		return nil, fmt.Errorf("decoding PKCS #12 file %s: %w", path, err)
	}
	key, ok := priv.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("loading PKCS #12 file %s: private key is %T: %w", path, priv, ErrNotRSA)
	}
	c, err := newCertificate(cert, key)
	if err != nil {
		return nil, fmt.Errorf("loading PKCS #12 file %s: %w", path, err)
	}
	return c, nil
}

// LoadPublicDER loads a public certificate from a .cer file, DER or PEM
// encoded, as an organisation hands it to the relay for registration.
func LoadPublicDER(path string) (*Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading certificate: %w", err)
	}
	c, err := ParsePublic(data)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s: %w", path, err)
	}
	return c, nil
}

// ParsePublic parses a public certificate, DER or PEM encoded. Its key must
// be RSA of at least MinKeyBits.
func ParsePublic(data []byte) (*Certificate, error) {
	cert, err := parseCertificate(data)
	if err != nil {
		return nil, err
	}
	return newCertificate(cert, nil)
}

// newCertificate checks that cert has a usable RSA key and that key, if any,
// belongs to it.
func newCertificate(cert *x509.Certificate, key *rsa.PrivateKey) (*Certificate, error) {
	pub, err := rsaPublicKey(cert)
	if err != nil {
		return nil, err
	}
	if key != nil && !pub.Equal(&key.PublicKey) {
		return nil, ErrKeyMismatch
	}
	return &Certificate{X509: cert, Key: key}, nil
}

// rsaPublicKey returns cert's RSA public key if it is at least MinKeyBits.
func rsaPublicKey(cert *x509.Certificate) (*rsa.PublicKey, error) {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("certificate key is %s: %w", cert.PublicKeyAlgorithm, ErrNotRSA)
	}
	if bits := pub.N.BitLen(); bits < MinKeyBits {
		return nil, fmt.Errorf("certificate key has %d bits: %w", bits, ErrKeyTooSmall)
	}
	return pub, nil
}

// parseCertificate parses the first CERTIFICATE block of PEM data, or data
// as DER when it is not PEM.
func parseCertificate(data []byte) (*x509.Certificate, error) {
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block = findPEM(data, "CERTIFICATE"); block == nil {
			return nil, errors.New("no CERTIFICATE block in PEM data")
		}
		der = block.Bytes
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return cert, nil
}

// parsePrivateKey parses the first private key block of PEM data.
func parsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PRIVATE KEY or RSA PRIVATE KEY block in PEM data")
		}
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing PKCS #1 private key: %w", err)
			}
			return key, nil
		case "PRIVATE KEY":
			parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing PKCS #8 private key: %w", err)
			}
			key, ok := parsed.(*rsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("private key is %T: %w", parsed, ErrNotRSA)
			}
			return key, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted PEM private keys are not supported: use an unencrypted key file with mode 0600, or a PKCS #12 file")
		}
	}
}

// findPEM returns the first PEM block of the given type in data, or nil.
func findPEM(data []byte, typ string) *pem.Block {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil || block.Type == typ {
			return block
		}
	}
}

// WritePEM writes the certificate to certPath (mode 0644) and its private
// key to keyPath (mode 0600, PKCS #8), both PEM encoded. Each file is
// written to a temporary file in the same directory and renamed into place,
// so a reader never sees a partial file; existing files are replaced.
func (c *Certificate) WritePEM(certPath, keyPath string) error {
	if c.Key == nil {
		return fmt.Errorf("writing private key: %w", ErrNoPrivateKey)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return fmt.Errorf("encoding private key: %w", err)
	}
	err = writeFilesAtomic(
		fileContent{path: keyPath, perm: 0o600, data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
		fileContent{path: certPath, perm: 0o644, data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.X509.Raw})},
	)
	if err != nil {
		return fmt.Errorf("writing certificate and key: %w", err)
	}
	return nil
}

// ExportDER writes the public certificate as DER (a .cer file, mode 0644),
// the form the relay registers. Like WritePEM it replaces path atomically.
func (c *Certificate) ExportDER(path string) error {
	if err := writeFilesAtomic(fileContent{path: path, perm: 0o644, data: c.X509.Raw}); err != nil {
		return fmt.Errorf("exporting certificate: %w", err)
	}
	return nil
}
