// Package apnstest helps tests that stand in for APNs: it writes the
// token signing key (.p8) an APNs app is registered with.
package apnstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// WriteKey writes a new P-256 signing key as AuthKey_<keyID>.p8 (PKCS #8
// PEM, mode 0600) into dir, and returns its path and public part, with
// which a fake APNs checks the provider tokens.
func WriteKey(dir, keyID string) (string, *ecdsa.PublicKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, fmt.Errorf("generating an APNs key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", nil, fmt.Errorf("encoding an APNs key: %w", err)
	}
	path := filepath.Join(dir, "AuthKey_"+keyID+".p8")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", nil, fmt.Errorf("writing an APNs key: %w", err)
	}
	return path, &key.PublicKey, nil
}
