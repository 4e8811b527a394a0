// Package subscriptions keeps device subscriptions, the registrations of a
// user's devices for badge pushes (what Exchange kept per OWA for Devices
// installation), in the KV bucket "subscriptions".
//
// A subscription lives until it is deleted or until the bucket's TTL (72
// hours by default) passes after its last refresh: every Put is a refresh.
// Its key is <user key>.<device hash>, where the user key is
// events.Keyer.UserKey(tenant, user) and the device hash is a hash of the
// app id and the device notification id, so a user's subscriptions are the
// keys matching <user key>.*.
//
// The package has the Store (Put, Delete, List, ListAll), a Cache of the
// devices of the users a dispatcher works on (bounded, read on demand,
// kept current by a watch of the bucket's changes), and the HTTP
// handlers that ingest mounts for the subscribe API (see Routes). A value
// in the bucket is JSON or the compact encoding (Encode); every reader
// reads both (Decode), writers write what the storage settings say
// (package storage).
package subscriptions

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Platform is the device's push service, as Exchange's
// DeviceNotificationType named it.
type Platform string

// Known platforms. GCM is FCM's former name, kept for Exchange-era clients.
const (
	PlatformAPNS    Platform = "APNS"
	PlatformFCM     Platform = "FCM"
	PlatformGCM     Platform = "GCM"
	PlatformWNS     Platform = "WNS"
	PlatformWebPush Platform = "WebPush"
	PlatformWebApp  Platform = "WebApp"
)

// Platforms lists the known platforms.
func Platforms() []Platform {
	return []Platform{PlatformAPNS, PlatformFCM, PlatformGCM, PlatformWNS, PlatformWebPush, PlatformWebApp}
}

// ParsePlatform returns the known platform named s, ignoring case.
func ParsePlatform(s string) (Platform, bool) {
	for _, p := range Platforms() {
		if strings.EqualFold(string(p), strings.TrimSpace(s)) {
			return p, true
		}
	}
	return "", false
}

// Options are Exchange's SubscriptionOption flags.
type Options uint32

// Subscription option flags.
const (
	OptionEmail                        Options = 1
	OptionCalendar                     Options = 2
	OptionVoiceMail                    Options = 4
	OptionMissedCall                   Options = 8
	OptionSuppressNotificationsWhenOof Options = 16
	OptionBackgroundSync               Options = 32

	allOptions = OptionEmail | OptionCalendar | OptionVoiceMail | OptionMissedCall | OptionSuppressNotificationsWhenOof | OptionBackgroundSync
)

var optionNames = []struct {
	opt  Options
	name string
}{
	{OptionEmail, "Email"},
	{OptionCalendar, "Calendar"},
	{OptionVoiceMail, "VoiceMail"},
	{OptionMissedCall, "MissedCall"},
	{OptionSuppressNotificationsWhenOof, "SuppressNotificationsWhenOof"},
	{OptionBackgroundSync, "BackgroundSync"},
}

// Has reports whether every flag of f is set.
func (o Options) Has(f Options) bool { return o&f == f }

// String lists the flags the way Exchange printed them: "Email, BackgroundSync".
func (o Options) String() string {
	var names []string
	for _, n := range optionNames {
		if o.Has(n.opt) {
			names = append(names, n.name)
		}
	}
	if rest := o &^ allOptions; rest != 0 {
		names = append(names, strconv.FormatUint(uint64(rest), 10))
	}
	if len(names) == 0 {
		return "None"
	}
	return strings.Join(names, ", ")
}

// ParseOptions reads flags as a number ("33") or as names separated by
// commas ("Email, BackgroundSync"; "None" is zero).
func ParseOptions(s string) (Options, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return Options(n), nil
	}
	var o Options
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" || strings.EqualFold(part, "None") {
			continue
		}
		found := false
		for _, n := range optionNames {
			if strings.EqualFold(part, n.name) {
				o |= n.opt
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown subscription option %q", part)
		}
	}
	return o, nil
}

// MarshalJSON writes the flags as a number.
func (o Options) MarshalJSON() ([]byte, error) { return []byte(strconv.FormatUint(uint64(o), 10)), nil }

// UnmarshalJSON reads a number, a string of names or numbers (see
// ParseOptions) or an array of names.
func (o *Options) UnmarshalJSON(data []byte) error {
	var n uint32
	if err := json.Unmarshal(data, &n); err == nil {
		*o = Options(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		return o.parse(s)
	}
	var list []string
	if err := json.Unmarshal(data, &list); err == nil {
		return o.parse(strings.Join(list, ","))
	}
	return invalid("options", "must be a number, a string or an array of names")
}

func (o *Options) parse(s string) error {
	v, err := ParseOptions(s)
	if err != nil {
		return invalid("options", "%v", err)
	}
	*o = v
	return nil
}

// Limits on field sizes.
const (
	MaxAppIDLen          = 256
	MaxDeviceIDLen       = 8192 // a Web Push subscription as JSON fits
	MaxLanguageLen       = 35
	MaxInstallationIDLen = 256
	MaxLabelLen          = 64
)

// Subscription is one device registered for a user's badge.
type Subscription struct {
	Tenant string `json:"tenant"`
	User   string `json:"user"`
	// AppID identifies the app; the relay maps it to a push service.
	AppID string `json:"appId"`
	// DeviceID is the device notification id: the push service's address
	// of the device (APNs token, FCM registration token, Web Push
	// subscription). It may hold secrets: never log it.
	DeviceID string   `json:"deviceId"`
	Platform Platform `json:"platform"`
	Options  Options  `json:"options"`
	// InboxUnreadCount is the count the device showed when it subscribed.
	InboxUnreadCount int    `json:"inboxUnreadCount"`
	Language         string `json:"language,omitempty"`
	InstallationID   string `json:"installationId,omitempty"`
	// Label names the device for people ("alice's iPhone"), set at
	// subscribe time; pushctl and the API show it beside the device
	// reference. Optional, at most MaxLabelLen bytes of printable UTF-8.
	Label string `json:"label,omitempty"`
	// LastSubscriptionUpdate is when the subscription was last refreshed;
	// Store.Put sets it.
	LastSubscriptionUpdate time.Time `json:"lastSubscriptionUpdate,omitzero"`

	// Key is the subscription's key in the bucket. It is filled in when a
	// subscription is read, never stored.
	Key string `json:"key,omitempty"`
	// ExpiresAt is when the subscription expires unless refreshed. It is
	// filled in when a subscription is read, never stored.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// ValidationError says which field of a subscription is wrong and why.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid subscription: %s: %s", e.Field, e.Reason)
}

// ErrInvalid matches every *ValidationError with errors.Is.
var ErrInvalid = errors.New("invalid subscription")

// Is makes errors.Is(err, ErrInvalid) true for validation errors.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Normalize puts the tenant in lower case, trims spaces and gives the
// platform its canonical spelling. Call Validate afterwards.
func (s *Subscription) Normalize() {
	s.Tenant = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s.Tenant)), ".")
	s.User = strings.TrimSpace(s.User)
	s.AppID = strings.TrimSpace(s.AppID)
	s.DeviceID = strings.TrimSpace(s.DeviceID)
	s.Language = strings.TrimSpace(s.Language)
	s.InstallationID = strings.TrimSpace(s.InstallationID)
	s.Label = strings.TrimSpace(s.Label)
	if p, ok := ParsePlatform(string(s.Platform)); ok {
		s.Platform = p
	}
}

// Validate checks every field and returns a *ValidationError for the first
// one that is wrong.
func (s *Subscription) Validate() error {
	if err := s.validateDevice(); err != nil {
		return err
	}
	if _, ok := ParsePlatform(string(s.Platform)); !ok {
		return invalid("platform", "unknown platform %q (want one of %s)", s.Platform, platformList())
	}
	if s.Options&^allOptions != 0 {
		return invalid("options", "unknown flags %d (known: Email 1, Calendar 2, VoiceMail 4, MissedCall 8, SuppressNotificationsWhenOof 16, BackgroundSync 32)", uint32(s.Options&^allOptions))
	}
	if s.InboxUnreadCount < 0 || s.InboxUnreadCount > events.MaxUnread {
		return invalid("inboxUnreadCount", "must be between 0 and %d, got %d", events.MaxUnread, s.InboxUnreadCount)
	}
	if s.Language != "" && !validLanguage(s.Language) {
		return invalid("language", "%q is not a language tag such as es-ES", s.Language)
	}
	if err := checkText("label", s.Label, MaxLabelLen, false); err != nil {
		return err
	}
	if err := checkText("installationId", s.InstallationID, MaxInstallationIDLen, false); err != nil {
		return err
	}
	return nil
}

// validateDevice checks the fields that identify a subscription.
func (s *Subscription) validateDevice() error {
	// The user first: a missing tenant is often taken from the user's
	// domain, so a missing user is the error to name.
	if err := events.ValidateAddress("user", s.User); err != nil {
		return err
	}
	if err := events.ValidateTenant(s.Tenant); err != nil {
		return err
	}
	if err := checkText("appId", s.AppID, MaxAppIDLen, true); err != nil {
		return err
	}
	return checkText("deviceId", s.DeviceID, MaxDeviceIDLen, true)
}

func checkText(field, v string, maxLen int, required bool) error {
	switch {
	case v == "" && required:
		return invalid(field, "required")
	case len(v) > maxLen:
		return invalid(field, "longer than %d bytes", maxLen)
	case !utf8.ValidString(v) || strings.ContainsRune(v, utf8.RuneError):
		// JSON decoding turns invalid bytes into U+FFFD.
		return invalid(field, "not valid UTF-8")
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return invalid(field, "contains a control character")
		}
	}
	return nil
}

func validLanguage(tag string) bool {
	if len(tag) > MaxLanguageLen {
		return false
	}
	for i, part := range strings.Split(tag, "-") {
		if part == "" || len(part) > 8 || (i == 0 && len(part) < 2) {
			return false
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

func platformList() string {
	var names []string
	for _, p := range Platforms() {
		names = append(names, string(p))
	}
	return strings.Join(names, ", ")
}

// DeviceHash is the last token of a subscription's key: a hash of the app
// id and the device notification id (26 lower-case base32 characters).
func DeviceHash(appID, deviceID string) string { return relayproto.DeviceHash(appID, deviceID) }

// MaskDevice shows a device token the way list answers do: a short
// fingerprint of it and, for a token of at least 16 bytes, its last four,
// never the token.
func MaskDevice(deviceID string) string {
	sum := sha256.Sum256([]byte(deviceID))
	masked := "sha256:" + hex.EncodeToString(sum[:4])
	if len(deviceID) >= 16 {
		masked += "…" + deviceID[len(deviceID)-4:]
	}
	return masked
}

// DeviceRef is a short, non-secret reference to a device for logs and
// pages, the same in every part (relayproto.DeviceRef).
func DeviceRef(appID, deviceID string) string { return relayproto.DeviceRef(appID, deviceID) }
