// Package events defines the mailbox change event that flows from ingest to
// the dispatcher: its JSON form, its validation, and the names derived from
// it (stream subjects, KV keys and the deduplication id).
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// SchemaVersion is the version of the event JSON that this package writes
// and the only one it accepts.
const SchemaVersion = 1

// Inbox is the mailbox whose unread count the badge shows by default.
const Inbox = "INBOX"

// Limits on field sizes. They keep a stream message small and reject junk early.
const (
	MaxAddressLen  = 320
	MaxMailboxLen  = 1024
	MaxChangeIDLen = 512
	MaxUnread      = 10_000_000
	MaxCount       = 1_000_000
)

// Kind is what happened in the mailbox.
type Kind string

// The kinds of change an event can report.
const (
	KindNew      Kind = "new"      // a message arrived (delivery or append)
	KindRead     Kind = "read"     // messages were marked seen
	KindUnread   Kind = "unread"   // messages were marked unseen
	KindDeleted  Kind = "deleted"  // messages were expunged or moved to trash
	KindMoved    Kind = "moved"    // messages moved from FromMailbox to Mailbox
	KindFlags    Kind = "flags"    // other flags changed; no effect on the count that the source knows of (Graph's "updated" does not say: the reconciler checks those)
	KindSnapshot Kind = "snapshot" // only states the current unread count
)

// Kinds lists every valid kind, in documentation order.
func Kinds() []Kind {
	return []Kind{KindNew, KindRead, KindUnread, KindDeleted, KindMoved, KindFlags, KindSnapshot}
}

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool {
	for _, known := range Kinds() {
		if k == known {
			return true
		}
	}
	return false
}

// Source names the kind of system that reported an event.
type Source string

// The sources ingest understands.
const (
	SourceNative     Source = "native"
	SourceDovecotOX  Source = "dovecot-ox"
	SourceDovecotLua Source = "dovecot-lua"
	SourceEWS        Source = "ews"
	SourceGraph      Source = "graph"
	// SourceIMAP marks the snapshots of ingest's IMAP watcher (IDLE).
	SourceIMAP   Source = "imap"
	SourceCanary Source = "canary"
	// SourceReconcile marks the snapshots internal/reconcile publishes
	// after reading the true count from the mail system.
	SourceReconcile Source = "reconcile"
)

// Event is one mailbox change of one user.
//
// Unread, when present, is the authoritative unread count of Mailbox after
// the change; without it the change only adjusts the last known count.
type Event struct {
	Version     int       `json:"v"`
	Tenant      string    `json:"tenant"`
	User        string    `json:"user"`
	Mailbox     string    `json:"mailbox"`
	FromMailbox string    `json:"from_mailbox,omitempty"`
	Kind        Kind      `json:"kind"`
	Unread      *int      `json:"unread,omitempty"`
	Count       int       `json:"count,omitempty"`
	ChangeID    string    `json:"change_id,omitempty"`
	UIDValidity uint32    `json:"uidvalidity,omitempty"`
	UID         uint32    `json:"uid,omitempty"`
	OccurredAt  time.Time `json:"occurred_at"`
	Source      Source    `json:"source"`
	ReceivedAt  time.Time `json:"received_at,omitzero"`
}

// ValidationError says which field of an event is wrong and why.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid event: %s: %s", e.Field, e.Reason)
}

// ErrInvalid matches every *ValidationError with errors.Is.
var ErrInvalid = errors.New("invalid event")

// Is makes errors.Is(err, ErrInvalid) true for validation errors.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// IntPtr returns a pointer to n, for building events with an Unread count.
func IntPtr(n int) *int { return &n }

// Normalize fills in defaults and canonical forms: the schema version, the
// Inbox for an empty mailbox, a count of one, a lower-case tenant, and a
// change id derived from UIDVALIDITY and UID (and, for changes that can
// repeat such as read and unread, the time) when the source gave none. It
// does not validate; call Validate afterwards.
func (e *Event) Normalize() {
	if e.Version == 0 {
		e.Version = SchemaVersion
	}
	e.Tenant = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(e.Tenant)), ".")
	e.User = strings.TrimSpace(e.User)
	if e.Mailbox == "" {
		e.Mailbox = Inbox
	}
	if strings.EqualFold(e.Mailbox, Inbox) {
		e.Mailbox = Inbox
	}
	if e.Count == 0 {
		e.Count = 1
	}
	if e.ChangeID == "" && e.UID != 0 {
		e.ChangeID = fmt.Sprintf("uid:%s/%d/%d/%s", e.Mailbox, e.UIDValidity, e.UID, e.Kind)
		if e.Kind != KindNew && e.Kind != KindDeleted && !e.OccurredAt.IsZero() {
			// A message arrives and goes once, but it can be read, unread
			// and read again within the duplicate window: the time tells
			// those changes apart.
			e.ChangeID += "@" + e.OccurredAt.UTC().Format(time.RFC3339Nano)
		}
	}
	if e.Source == "" {
		e.Source = SourceNative
	}
}

// Validate checks every field and returns a *ValidationError for the first
// one that is wrong.
func (e *Event) Validate() error {
	var v Validator
	return v.Validate(e)
}

// Validator validates events as Event.Validate does. It remembers the last
// tenant it found valid, so that the events of one request, usually of one
// tenant, have their tenant checked once. The zero value is ready to use; a
// Validator is not safe for concurrent use.
type Validator struct {
	tenant string // the last tenant that passed ValidateTenant
}

// Validate checks every field of e and returns a *ValidationError for the
// first one that is wrong.
func (v *Validator) Validate(e *Event) error {
	if e.Version != SchemaVersion {
		return invalid("v", "unsupported schema version %d (this server speaks %d)", e.Version, SchemaVersion)
	}
	if e.Tenant == "" || e.Tenant != v.tenant {
		if err := ValidateTenant(e.Tenant); err != nil {
			return err
		}
		v.tenant = e.Tenant
	}
	if err := ValidateAddress("user", e.User); err != nil {
		return err
	}
	if err := validateMailbox("mailbox", e.Mailbox); err != nil {
		return err
	}
	if !e.Kind.Valid() {
		return invalid("kind", "unknown kind %q (want one of %s)", e.Kind, kindList())
	}
	if e.Kind == KindMoved {
		if err := validateMailbox("from_mailbox", e.FromMailbox); err != nil {
			return err
		}
	} else if e.FromMailbox != "" {
		return invalid("from_mailbox", "only allowed with kind %q", KindMoved)
	}
	if e.Kind == KindSnapshot && e.Unread == nil {
		return invalid("unread", "required with kind %q", KindSnapshot)
	}
	if e.Unread != nil && (*e.Unread < 0 || *e.Unread > MaxUnread) {
		return invalid("unread", "must be between 0 and %d, got %d", MaxUnread, *e.Unread)
	}
	if e.Count < 1 || e.Count > MaxCount {
		return invalid("count", "must be between 1 and %d, got %d", MaxCount, e.Count)
	}
	if e.ChangeID == "" {
		return invalid("change_id", "required (or uidvalidity and uid): it identifies the change so that a retry is not counted twice")
	}
	if len(e.ChangeID) > MaxChangeIDLen || !validUTF8(e.ChangeID) {
		return invalid("change_id", "must be valid UTF-8 of at most %d bytes", MaxChangeIDLen)
	}
	if e.OccurredAt.IsZero() {
		return invalid("occurred_at", "required (RFC 3339 time)")
	}
	switch e.Source {
	case SourceNative, SourceDovecotOX, SourceDovecotLua, SourceEWS, SourceGraph, SourceIMAP, SourceCanary, SourceReconcile:
	default:
		return invalid("source", "unknown source %q", e.Source)
	}
	return nil
}

func kindList() string {
	names := make([]string, 0, len(Kinds()))
	for _, k := range Kinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// ValidateTenant checks that tenant is a lower-case DNS domain name such as
// "fabrikam.com".
func ValidateTenant(tenant string) error {
	if tenant == "" {
		return invalid("tenant", "required (the organisation's domain, e.g. fabrikam.com)")
	}
	if len(tenant) > 253 {
		return invalid("tenant", "longer than 253 characters")
	}
	ascii, err := idna.Lookup.ToASCII(tenant)
	if err != nil || ascii != tenant {
		return invalid("tenant", "%q is not a lower-case domain name", tenant)
	}
	labels := strings.Split(tenant, ".")
	if len(labels) < 2 {
		return invalid("tenant", "%q is not a domain name with at least two labels", tenant)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return invalid("tenant", "%q has an invalid label %q", tenant, l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return invalid("tenant", "%q has an invalid character %q", tenant, r)
			}
		}
	}
	return nil
}

// ValidateAddress checks that an address (a user name or e-mail address) is
// printable UTF-8 of reasonable length. field names it in the error.
func ValidateAddress(field, addr string) error {
	if addr == "" {
		return invalid(field, "required")
	}
	if len(addr) > MaxAddressLen {
		return invalid(field, "longer than %d bytes", MaxAddressLen)
	}
	if !validUTF8(addr) {
		return invalid(field, "not valid UTF-8")
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c >= utf8.RuneSelf {
			// Beyond ASCII: the Unicode tables decide.
			for _, r := range addr[i:] {
				if unicode.IsSpace(r) || !unicode.IsPrint(r) {
					return invalid(field, "contains a space or control character")
				}
			}
			break
		} else if c <= ' ' || c == 0x7f { // ASCII space, controls and DEL
			return invalid(field, "contains a space or control character")
		}
	}
	return nil
}

func validateMailbox(field, name string) error {
	if name == "" {
		return invalid(field, "required")
	}
	if len(name) > MaxMailboxLen || !validUTF8(name) {
		return invalid(field, "must be valid UTF-8 of at most %d bytes", MaxMailboxLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= utf8.RuneSelf {
			// Beyond ASCII: the Unicode tables decide.
			for _, r := range name[i:] {
				if unicode.IsControl(r) {
					return invalid(field, "contains a control character")
				}
			}
			break
		} else if c < ' ' || c == 0x7f { // ASCII controls and DEL
			return invalid(field, "contains a control character")
		}
	}
	return nil
}

// validUTF8 reports whether s is valid UTF-8 without U+FFFD. JSON decoding
// turns invalid bytes into U+FFFD, so in an identity that character means
// the request was not valid UTF-8, and two different byte strings would
// collapse into one name.
func validUTF8(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, utf8.RuneError)
}

// Decode parses a stream message into an event and validates it.
func Decode(data []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return Event{}, fmt.Errorf("decoding event: %w", err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Concerns reports whether the event touches mailbox (as its mailbox, or as
// the origin of a move).
func (e *Event) Concerns(mailbox string) bool {
	return e.Mailbox == mailbox || (e.Kind == KindMoved && e.FromMailbox == mailbox)
}

// DeltaFor is how the event changes the unread count of mailbox when it
// carries no authoritative count: positive for new and unread messages,
// negative for read and deleted ones, zero when mailbox is not concerned or
// the kind does not change the count. A move counts as leaving one mailbox
// and arriving in the other.
func (e *Event) DeltaFor(mailbox string) int {
	if e.Kind == KindMoved {
		d := 0
		if e.Mailbox == mailbox {
			d += e.Count
		}
		if e.FromMailbox == mailbox {
			d -= e.Count
		}
		return d
	}
	if e.Mailbox != mailbox {
		return 0
	}
	switch e.Kind {
	case KindNew, KindUnread:
		return e.Count
	case KindRead, KindDeleted:
		return -e.Count
	default:
		return 0
	}
}
