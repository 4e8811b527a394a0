package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"hash"
	"strings"
	"sync"
	"unicode/utf8"
)

// Subject prefixes and patterns of the MAIL stream.
//
// Publishers send to mail.<tenant>.<user>; the stream's subject transform
// stores the message as mail.<partition>.<tenant>.<user>, so a dispatcher
// worker can consume one partition with the filter mail.<partition>.>.
const (
	SubjectPrefix  = "mail"
	PublishPattern = "mail.*.*"
)

// userTokenEncoding is lower-case base32 without padding: subject-safe and
// KV-key-safe.
var userTokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// MinKeyLen is the shortest accepted subject key.
const MinKeyLen = 16

// ErrShortKey is returned by NewKeyer for a key shorter than MinKeyLen.
var ErrShortKey = errors.New("subject key too short")

// Keyer derives the names under which a user's data is stored: stream
// subjects, KV keys and deduplication ids. Users appear only as a keyed hash,
// so no address reaches a subject name, and characters that are special in
// NATS never do either. Every component of a deployment must use the same
// key; it is kept in the config bucket (see internal/broker).
type Keyer struct {
	macs sync.Pool // of *macState keyed with the subject key
}

// macState is a keyed HMAC with room for its input and sum, reused so
// that deriving a name allocates nothing but the name.
type macState struct {
	h   hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

// Lengths of the encoded hashes.
const (
	userTokenBytes = 16 // 128 bits, 26 characters
	msgIDBytes     = 20 // 160 bits, 32 characters
)

// NewKeyer returns a Keyer for key, which must be at least MinKeyLen bytes.
func NewKeyer(key []byte) (*Keyer, error) {
	if len(key) < MinKeyLen {
		return nil, ErrShortKey
	}
	key = append([]byte(nil), key...)
	k := &Keyer{}
	k.macs.New = func() any { return &macState{h: hmac.New(sha256.New, key), in: make([]byte, 0, 256)} }
	return k, nil
}

// TenantToken is the subject-safe form of a validated tenant domain: the
// dots become underscores ("fabrikam.com" -> "fabrikam_com"). Domain labels
// hold no underscore, so the mapping is one to one and readable.
func TenantToken(tenant string) string {
	return strings.ReplaceAll(tenant, ".", "_")
}

// appendTenantToken appends TenantToken(tenant) to dst.
func appendTenantToken(dst []byte, tenant string) []byte {
	for i := 0; i < len(tenant); i++ {
		c := tenant[i]
		if c == '.' {
			c = '_'
		}
		dst = append(dst, c)
	}
	return dst
}

// UserToken is the keyed hash of a user of a tenant: 26 lower-case base32
// characters (128 bits). Addresses compare case-insensitively.
func (k *Keyer) UserToken(tenant, user string) string {
	return string(k.appendUserToken(make([]byte, 0, 26), tenant, user))
}

func (k *Keyer) appendUserToken(dst []byte, tenant, user string) []byte {
	m := k.macs.Get().(*macState)
	defer k.macs.Put(m)
	m.in = appendPart(m.in[:0], "user")
	m.in = appendPart(m.in, tenant)
	m.in = appendLowerPart(m.in, user)
	return userTokenEncoding.AppendEncode(dst, m.mac()[:userTokenBytes])
}

// Subject is where ingest publishes the user's events: mail.<tenant>.<user>.
func (k *Keyer) Subject(tenant, user string) string {
	return string(k.AppendSubject(make([]byte, 0, 64), tenant, user))
}

// AppendSubject appends Subject(tenant, user) to dst.
func (k *Keyer) AppendSubject(dst []byte, tenant, user string) []byte {
	dst = append(dst, SubjectPrefix+"."...)
	dst = appendTenantToken(dst, tenant)
	dst = append(dst, '.')
	return k.appendUserToken(dst, tenant, user)
}

// StoredSubjectFilter matches every stored event of the user, whatever its
// partition: mail.*.<tenant>.<user>.
func (k *Keyer) StoredSubjectFilter(tenant, user string) string {
	return SubjectPrefix + ".*." + TenantToken(tenant) + "." + k.UserToken(tenant, user)
}

// UserKey is the user's key in per-user KV buckets: <tenant>.<user>.
func (k *Keyer) UserKey(tenant, user string) string {
	return TenantToken(tenant) + "." + k.UserToken(tenant, user)
}

// MsgID is the event's Nats-Msg-Id: a hash of the tenant, the user, the
// source and the source's own identity of the change. A source that sends
// the same change twice produces the same id, and the stream keeps one copy.
func (k *Keyer) MsgID(e *Event) string {
	return string(k.AppendMsgID(make([]byte, 0, 32), e))
}

// AppendMsgID appends MsgID(e) to dst.
func (k *Keyer) AppendMsgID(dst []byte, e *Event) []byte {
	m := k.macs.Get().(*macState)
	defer k.macs.Put(m)
	m.in = appendPart(m.in[:0], "msg")
	m.in = appendPart(m.in, e.Tenant)
	m.in = appendLowerPart(m.in, e.User)
	m.in = appendPart(m.in, string(e.Source))
	m.in = appendPart(m.in, e.ChangeID)
	return userTokenEncoding.AppendEncode(dst, m.mac()[:msgIDBytes])
}

// mac is the HMAC of the input gathered in m.in.
func (m *macState) mac() []byte {
	m.h.Reset()
	m.h.Write(m.in)
	return m.h.Sum(m.sum[:0])
}

// appendPart appends one part of a hash input: its bytes and a zero byte.
func appendPart(dst []byte, p string) []byte {
	return append(append(dst, p...), 0)
}

// appendLowerPart appends strings.ToLower(p) as a part, without allocating
// for ASCII.
func appendLowerPart(dst []byte, p string) []byte {
	for i := 0; i < len(p); i++ {
		if p[i] >= utf8.RuneSelf {
			return appendPart(dst, strings.ToLower(p))
		}
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return append(dst, 0)
}

// PartitionOf parses the partition number from a stored subject
// mail.<partition>.<tenant>.<user>. It reports false for any other form.
func PartitionOf(subject string) (int, bool) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != SubjectPrefix {
		return 0, false
	}
	n := 0
	for _, c := range parts[1] {
		if c < '0' || c > '9' || n > 1<<20 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, parts[1] != ""
}
