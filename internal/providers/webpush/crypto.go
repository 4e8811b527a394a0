package webpush

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Sizes fixed by RFC 8291 and RFC 8188.
const (
	saltSize       = 16
	authSecretSize = 16
	publicKeySize  = 65 // uncompressed P-256 point
	// recordSize is the rs of the single record sent; the RFC 8291 example
	// uses the same. The whole body must fit in one record.
	recordSize = 4096
	// headerSize is salt, rs, idlen and the sender's public key.
	headerSize = saltSize + 4 + 1 + publicKeySize
	// MaxPayload is the largest plaintext that fits in one record.
	MaxPayload = recordSize - 16 - 1 - headerSize
)

// encrypt encrypts plaintext for one subscriber as RFC 8188 aes128gcm content
// with the key derivation of RFC 8291, section 3.4: asPrivate is the
// application server's single-use key pair and salt a fresh random 16 bytes.
// The body is one record: plaintext, the last-record delimiter 0x02, no
// padding.
func encrypt(plaintext, uaPublic, authSecret []byte, asPrivate *ecdh.PrivateKey, salt []byte) ([]byte, error) {
	if len(plaintext) > MaxPayload {
		return nil, fmt.Errorf("payload of %d bytes is over %d", len(plaintext), MaxPayload)
	}
	if len(salt) != saltSize || len(authSecret) != authSecretSize {
		return nil, errors.New("salt and auth secret must be 16 bytes")
	}
	ua, err := ecdh.P256().NewPublicKey(uaPublic)
	if err != nil {
		return nil, fmt.Errorf("subscriber public key: %w", err)
	}
	secret, err := asPrivate.ECDH(ua)
	if err != nil {
		return nil, fmt.Errorf("key agreement: %w", err)
	}
	asPublic := asPrivate.PublicKey().Bytes()

	// IKM = HKDF(salt = auth_secret, ikm = ecdh_secret,
	//            info = "WebPush: info" || 0x00 || ua_public || as_public, 32)
	info := make([]byte, 0, 14+2*publicKeySize)
	info = append(info, "WebPush: info\x00"...)
	info = append(info, uaPublic...)
	info = append(info, asPublic...)
	ikm, err := hkdf.Key(sha256.New, secret, authSecret, string(info), 32)
	if err != nil {
		return nil, fmt.Errorf("deriving IKM: %w", err)
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, fmt.Errorf("deriving PRK: %w", err)
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, fmt.Errorf("deriving CEK: %w", err)
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, fmt.Errorf("deriving nonce: %w", err)
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("cipher: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cipher: %w", err)
	}

	out := make([]byte, 0, headerSize+len(plaintext)+1+gcm.Overhead())
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, recordSize)
	out = append(out, byte(len(asPublic)))
	out = append(out, asPublic...)
	record := make([]byte, 0, len(plaintext)+1)
	record = append(record, plaintext...)
	record = append(record, 0x02) // delimiter of the last (only) record
	return gcm.Seal(out, nonce, record, nil), nil
}

// seal encrypts plaintext for a subscriber with a fresh sender key and salt.
func seal(plaintext, uaPublic, authSecret []byte) ([]byte, error) {
	as, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating sender key: %w", err)
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("generating salt: %w", err)
	}
	return encrypt(plaintext, uaPublic, authSecret, as, salt)
}

// decodeBase64 decodes base64url with or without padding, and also standard
// base64, as browsers and tools differ.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	return base64.RawURLEncoding.DecodeString(s)
}

// parsePrivateKey reads a VAPID private key: PEM (PKCS #8 or SEC 1 "EC
// PRIVATE KEY") or base64url of the 32-byte private scalar, as VAPID key
// generators print it. Errors never quote the key.
func parsePrivateKey(data []byte) (*ecdsa.PrivateKey, error) {
	if block, _ := pem.Decode(data); block != nil {
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			key, err = x509.ParseECPrivateKey(block.Bytes) // SEC 1
		}
		if err != nil {
			return nil, errors.New("PEM block is neither a PKCS #8 nor an EC private key")
		}
		k, ok := key.(*ecdsa.PrivateKey)
		if !ok || k.Curve != elliptic.P256() {
			return nil, errors.New("not a P-256 key")
		}
		return k, nil
	}
	d, err := decodeBase64(string(data))
	if err != nil || len(d) != 32 {
		return nil, errors.New("neither PEM nor a base64url 32-byte P-256 private key")
	}
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, errors.New("not a valid P-256 private key")
	}
	return k, nil
}

// parsePublicKey reads a VAPID public key: base64url of the 65-byte
// uncompressed point, or a PEM "PUBLIC KEY". It returns the uncompressed
// point.
func parsePublicKey(data []byte) ([]byte, error) {
	if block, _ := pem.Decode(data); block != nil {
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM public key: %w", err)
		}
		k, ok := key.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			return nil, errors.New("not a P-256 key")
		}
		return k.Bytes()
	}
	raw, err := decodeBase64(string(data))
	if err != nil {
		return nil, errors.New("neither PEM nor base64url")
	}
	if _, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw); err != nil {
		return nil, errors.New("not an uncompressed P-256 point")
	}
	return raw, nil
}

// GenerateVAPIDKeys returns a new VAPID key pair in the form Config's key
// files take and browsers' applicationServerKey expects: base64url (no
// padding) of the 32-byte private scalar and of the 65-byte uncompressed
// public point.
func GenerateVAPIDKeys() (privateKey, publicKey string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generating VAPID key: %w", err)
	}
	d, err := k.Bytes()
	if err != nil {
		return "", "", fmt.Errorf("encoding VAPID key: %w", err)
	}
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		return "", "", fmt.Errorf("encoding VAPID key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(d), base64.RawURLEncoding.EncodeToString(pub), nil
}
