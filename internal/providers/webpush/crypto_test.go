package webpush

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// RFC 8291, Appendix A: a complete example of encrypting a push message.
const (
	rfcPlaintext = "When I grow up, I want to be a watermelon"
	rfcASPrivate = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
	rfcASPublic  = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
	rfcUAPrivate = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
	rfcUAPublic  = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
	rfcSalt      = "DGv6ra1nlYgDCS1FRnbzlw"
	rfcAuth      = "BTBZMqHH6r4Tts7J_aSIgg"
	rfcBody      = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)

func b64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ecdhKey(t testing.TB, d string) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.P256().NewPrivateKey(b64(t, d))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// hmacSHA256 is HMAC-SHA-256(key, parts...).
func hmacSHA256(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// decrypt is the user agent's side: RFC 8291 section 3.4 written out with
// HMAC as the RFC does (independently of crypto/hkdf, which encrypt uses),
// and RFC 8188 records, padding and delimiters.
func decrypt(body []byte, ua *ecdh.PrivateKey, authSecret []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("short header")
	}
	salt := body[:16]
	rs := int(binary.BigEndian.Uint32(body[16:20]))
	idlen := int(body[20])
	if rs < 18 || len(body) < 21+idlen {
		return nil, errors.New("bad header")
	}
	asPublic := body[21 : 21+idlen]
	as, err := ecdh.P256().NewPublicKey(asPublic)
	if err != nil {
		return nil, fmt.Errorf("sender key: %w", err)
	}
	secret, err := ua.ECDH(as)
	if err != nil {
		return nil, err
	}
	prkKey := hmacSHA256(authSecret, secret)
	ikm := hmacSHA256(prkKey, []byte("WebPush: info\x00"), ua.PublicKey().Bytes(), asPublic, []byte{1})
	prk := hmacSHA256(salt, ikm)
	cek := hmacSHA256(prk, []byte("Content-Encoding: aes128gcm\x00\x01"))[:16]
	nonce := hmacSHA256(prk, []byte("Content-Encoding: nonce\x00\x01"))[:12]
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	var out []byte
	records := body[21+idlen:]
	if len(records) == 0 {
		return nil, errors.New("no records")
	}
	for seq := uint64(0); len(records) > 0; seq++ {
		n := min(rs, len(records))
		rec := records[:n]
		records = records[n:]
		iv := bytes.Clone(nonce)
		var s [8]byte
		binary.BigEndian.PutUint64(s[:], seq)
		for i := range s {
			iv[4+i] ^= s[i]
		}
		plain, err := gcm.Open(nil, iv, rec, nil)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", seq, err)
		}
		end := bytes.LastIndexFunc(plain, func(r rune) bool { return r != 0 })
		if end < 0 {
			return nil, fmt.Errorf("record %d: no delimiter", seq)
		}
		last := len(records) == 0
		if want := byte(1) + boolByte(last); plain[end] != want {
			return nil, fmt.Errorf("record %d: delimiter %d, want %d", seq, plain[end], want)
		}
		out = append(out, plain[:end]...)
	}
	return out, nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func TestEncryptRFC8291Example(t *testing.T) {
	as := ecdhKey(t, rfcASPrivate)
	if got := base64.RawURLEncoding.EncodeToString(as.PublicKey().Bytes()); got != rfcASPublic {
		t.Fatalf("as_public %s, want %s", got, rfcASPublic)
	}
	body, err := encrypt([]byte(rfcPlaintext), b64(t, rfcUAPublic), b64(t, rfcAuth), as, b64(t, rfcSalt))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.RawURLEncoding.EncodeToString(body); got != rfcBody {
		t.Errorf("body\n%s\nwant (RFC 8291 Appendix A)\n%s", got, rfcBody)
	}
}

func TestDecryptRFC8291Example(t *testing.T) {
	ua := ecdhKey(t, rfcUAPrivate)
	if got := base64.RawURLEncoding.EncodeToString(ua.PublicKey().Bytes()); got != rfcUAPublic {
		t.Fatalf("ua_public %s, want %s", got, rfcUAPublic)
	}
	plain, err := decrypt(b64(t, rfcBody), ua, b64(t, rfcAuth))
	if err != nil {
		t.Fatal(err)
	}
	if string(plain) != rfcPlaintext {
		t.Errorf("plaintext %q, want %q", plain, rfcPlaintext)
	}
}

func TestSealRoundTrip(t *testing.T) {
	ua, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	for _, size := range []int{0, 1, 40, 1000, MaxPayload} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			plain := bytes.Repeat([]byte{'x'}, size)
			body, err := seal(plain, ua.PublicKey().Bytes(), auth)
			if err != nil {
				t.Fatal(err)
			}
			if len(body) > recordSize+headerSize {
				t.Errorf("body of %d bytes", len(body))
			}
			got, err := decrypt(body, ua, auth)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Error("round trip changed the plaintext")
			}
			body[len(body)-1] ^= 1
			if _, err := decrypt(body, ua, auth); err == nil {
				t.Error("tampered body decrypted")
			}
		})
	}
	if _, err := seal(make([]byte, MaxPayload+1), ua.PublicKey().Bytes(), auth); err == nil {
		t.Error("payload over MaxPayload encrypted")
	}
	other, _ := ecdh.P256().GenerateKey(rand.Reader)
	body, _ := seal([]byte("x"), ua.PublicKey().Bytes(), auth)
	if _, err := decrypt(body, other, auth); err == nil {
		t.Error("decrypted with another subscriber's key")
	}
}

func TestParseKeys(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := key.Bytes()
	pub, _ := key.PublicKey.Bytes()
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	sec1, _ := x509.MarshalECPrivateKey(key)
	pkix, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384der, _ := x509.MarshalPKCS8PrivateKey(p384)
	pemOf := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}

	privs := []struct {
		name string
		data string
		ok   bool
	}{
		{"base64url", base64.RawURLEncoding.EncodeToString(d) + "\n", true},
		{"padded base64url", base64.URLEncoding.EncodeToString(d), true},
		{"standard base64", base64.StdEncoding.EncodeToString(d), true},
		{"PKCS #8 PEM", pemOf("PRIVATE KEY", pkcs8), true},
		{"SEC 1 PEM", pemOf("EC PRIVATE KEY", sec1), true},
		{"P-384 PEM", pemOf("PRIVATE KEY", p384der), false},
		{"short", base64.RawURLEncoding.EncodeToString(d[:31]), false},
		{"zero scalar", base64.RawURLEncoding.EncodeToString(make([]byte, 32)), false},
		{"garbage", "not a key", false},
	}
	for _, tt := range privs {
		got, err := parsePrivateKey([]byte(tt.data))
		if (err == nil) != tt.ok {
			t.Errorf("private %s: error %v, want ok=%v", tt.name, err, tt.ok)
			continue
		}
		if err == nil && !got.Equal(key) {
			t.Errorf("private %s: different key", tt.name)
		}
		if err != nil && strings.Contains(err.Error(), tt.data) {
			t.Errorf("private %s: error quotes the key", tt.name)
		}
	}

	pubs := []struct {
		name string
		data string
		ok   bool
	}{
		{"base64url", base64.RawURLEncoding.EncodeToString(pub), true},
		{"PEM", pemOf("PUBLIC KEY", pkix), true},
		{"compressed", base64.RawURLEncoding.EncodeToString(elliptic.MarshalCompressed(elliptic.P256(), key.X, key.Y)), false},
		{"off curve", base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...)), false},
	}
	for _, tt := range pubs {
		got, err := parsePublicKey([]byte(tt.data))
		if (err == nil) != tt.ok {
			t.Errorf("public %s: error %v, want ok=%v", tt.name, err, tt.ok)
			continue
		}
		if err == nil && !bytes.Equal(got, pub) {
			t.Errorf("public %s: different key", tt.name)
		}
	}
}

func TestGenerateVAPIDKeys(t *testing.T) {
	priv, pub, err := GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	key, err := parsePrivateKey([]byte(priv))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := key.PublicKey.Bytes()
	got, err := parsePublicKey([]byte(pub))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("public key does not match the private key: %v", err)
	}
}
