package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"hash"
	"io"
	"strings"
	"sync"
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
	macs sync.Pool // of hash.Hash keyed with the subject key
}

// NewKeyer returns a Keyer for key, which must be at least MinKeyLen bytes.
func NewKeyer(key []byte) (*Keyer, error) {
	if len(key) < MinKeyLen {
		return nil, ErrShortKey
	}
	key = append([]byte(nil), key...)
	k := &Keyer{}
	k.macs.New = func() any { return hmac.New(sha256.New, key) }
	return k, nil
}

// TenantToken is the subject-safe form of a validated tenant domain: the
// dots become underscores ("fabrikam.com" -> "fabrikam_com"). Domain labels
// hold no underscore, so the mapping is one to one and readable.
func TenantToken(tenant string) string {
	return strings.ReplaceAll(tenant, ".", "_")
}

// UserToken is the keyed hash of a user of a tenant: 26 lower-case base32
// characters (128 bits). Addresses compare case-insensitively.
func (k *Keyer) UserToken(tenant, user string) string {
	return userTokenEncoding.EncodeToString(k.mac("user", tenant, strings.ToLower(user))[:16])
}

// Subject is where ingest publishes the user's events: mail.<tenant>.<user>.
func (k *Keyer) Subject(tenant, user string) string {
	return SubjectPrefix + "." + TenantToken(tenant) + "." + k.UserToken(tenant, user)
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
	return userTokenEncoding.EncodeToString(k.mac("msg", e.Tenant, strings.ToLower(e.User), string(e.Source), e.ChangeID)[:20])
}

func (k *Keyer) mac(parts ...string) []byte {
	h := k.macs.Get().(hash.Hash)
	defer k.macs.Put(h)
	h.Reset()
	for _, p := range parts {
		io.WriteString(h, p)
		h.Write([]byte{0})
	}
	return h.Sum(nil)
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
