package subscriptions

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pushproxy/pushproxy/internal/compact"
	"github.com/pushproxy/pushproxy/internal/storage"
)

// The compact encoding of a subscription, version 1 (compact.Version1):
//
//	version                 1 byte, compact.Version1
//	flags                   unsigned varint (sub... below)
//	platform                1 byte: its number in compactPlatforms; 0 when
//	                        it has none, and then its name as bytes
//	Options                 unsigned varint
//	InboxUnreadCount        signed varint
//	Tenant                  bytes
//	User                    bytes; if subUserAtTenant only the part before
//	                        "@" + Tenant
//	AppID                   bytes
//	DeviceID                bytes; if subHexLower or subHexUpper the bytes
//	                        its hex digits stand for (an APNs token: 32
//	                        bytes instead of 64)
//	Language                bytes, if subLanguage
//	InstallationID          bytes, if subInstallationID
//	Label                   bytes, if subLabel
//	LastSubscriptionUpdate  time (compact.AppendTime), if subUpdated
//
// where bytes are an unsigned varint length and the bytes, which must be
// valid UTF-8. Key and ExpiresAt are never stored: readers fill them in
// from the entry. Each subscription has exactly one compact form (a flag
// is set whenever it can be), and the decoder refuses any other.
const (
	subHexLower uint64 = 1 << iota
	subHexUpper
	subUserAtTenant
	subLanguage
	subInstallationID
	subLabel
	subUpdated

	subFlags = subHexLower | subHexUpper | subUserAtTenant | subLanguage | subInstallationID | subLabel | subUpdated
)

// compactPlatforms numbers the platforms in the compact encoding (0: the
// name follows). The numbers are stored: append, never reorder.
var compactPlatforms = [...]Platform{1: PlatformAPNS, 2: PlatformFCM, 3: PlatformGCM, 4: PlatformWNS, 5: PlatformWebPush, 6: PlatformWebApp}

// platformNumber is p's number in compactPlatforms, 0 when it has none.
func platformNumber(p Platform) byte {
	for i, known := range compactPlatforms {
		if i > 0 && known == p {
			return byte(i)
		}
	}
	return 0
}

// hexFlag says how a device token can be stored as the bytes its hex
// digits stand for: subHexLower for lower-case hex (digits only count as
// lower case), subHexUpper for upper-case hex with at least one letter,
// 0 when it cannot.
func hexFlag(s string) uint64 {
	if len(s) < 2 || len(s)%2 != 0 {
		return 0
	}
	lower, upper, letter := true, true, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'f':
			upper, letter = false, true
		case c >= 'A' && c <= 'F':
			lower, letter = false, true
		default:
			return 0
		}
	}
	switch {
	case lower:
		return subHexLower
	case upper && letter:
		return subHexUpper
	default:
		return 0
	}
}

// textField is a text field of a subscription in the compact encoding:
// its flag (0: always stored), its name for errors, where it is.
type textField struct {
	flag uint64
	name string
	v    *string
}

// optionalTexts are the text fields a compact subscription holds only when
// they are set, in their order.
func optionalTexts(sub *Subscription) []textField {
	return []textField{{subLanguage, "language", &sub.Language}, {subInstallationID, "installationId", &sub.InstallationID}, {subLabel, "label", &sub.Label}}
}

// Encode returns sub in enc, as Store writes it. Key and ExpiresAt are
// never stored.
func Encode(sub Subscription, enc storage.Encoding) ([]byte, error) {
	sub.Key, sub.ExpiresAt = "", time.Time{}
	if enc != storage.Compact {
		return json.Marshal(sub)
	}
	platform := string(sub.Platform)
	always := []textField{{0, "tenant", &sub.Tenant}, {0, "user", &sub.User}, {0, "appId", &sub.AppID}, {0, "deviceId", &sub.DeviceID}, {0, "platform", &platform}}
	var flags uint64
	for _, f := range append(always, optionalTexts(&sub)...) {
		if !utf8.ValidString(*f.v) {
			return nil, fmt.Errorf("%s is not valid UTF-8", f.name)
		}
		if *f.v != "" {
			flags |= f.flag
		}
	}
	device := []byte(sub.DeviceID)
	if isHex := hexFlag(sub.DeviceID); isHex != 0 {
		flags |= isHex
		var err error
		if device, err = hex.DecodeString(sub.DeviceID); err != nil {
			return nil, fmt.Errorf("deviceId: %w", err) // hexFlag said it is hex: never
		}
	}
	user, atTenant := strings.CutSuffix(sub.User, "@"+sub.Tenant)
	if atTenant {
		flags |= subUserAtTenant
	}
	if !sub.LastSubscriptionUpdate.IsZero() {
		flags |= subUpdated
	}

	b := make([]byte, 0, 64+len(sub.Tenant)+len(user)+len(sub.AppID)+len(device)+len(sub.Language)+len(sub.InstallationID)+len(sub.Label))
	b = append(b, compact.Version1)
	b = binary.AppendUvarint(b, flags)
	n := platformNumber(sub.Platform)
	b = append(b, n)
	if n == 0 {
		b = compact.AppendString(b, platform)
	}
	b = binary.AppendUvarint(b, uint64(sub.Options))
	b = compact.AppendInt(b, sub.InboxUnreadCount)
	b = compact.AppendString(b, sub.Tenant)
	b = compact.AppendString(b, user)
	b = compact.AppendString(b, sub.AppID)
	b = compact.AppendBytes(b, device)
	for _, f := range optionalTexts(&sub) {
		if flags&f.flag != 0 {
			b = compact.AppendString(b, *f.v)
		}
	}
	if flags&subUpdated != 0 {
		var err error
		if b, err = compact.AppendTime(b, sub.LastSubscriptionUpdate); err != nil {
			return nil, fmt.Errorf("lastSubscriptionUpdate: %w", err)
		}
	}
	return b, nil
}

// Decode reads a subscription in either encoding: JSON, which every
// release wrote, or the compact one, told apart by the first byte. It is
// the one decoder of the bucket's values; Key and ExpiresAt are left
// empty, for the reader to fill in from the entry.
func Decode(data []byte) (Subscription, error) {
	sub, err := compact.Decode(data, decodeCompact)
	if err != nil {
		return Subscription{}, err
	}
	sub.Key, sub.ExpiresAt = "", time.Time{} // JSON may hold them; compact never does
	return sub, nil
}

// decodeCompact reads the fields after the version byte.
func decodeCompact(r *compact.Reader) (Subscription, error) {
	var sub Subscription
	flags, err := r.Uvarint("flags")
	if err != nil {
		return Subscription{}, err
	}
	if flags&^subFlags != 0 || flags&subHexLower != 0 && flags&subHexUpper != 0 {
		return Subscription{}, fmt.Errorf("%w: flags %#x", compact.ErrCorrupt, flags)
	}
	n, err := r.Byte("platform")
	if err != nil {
		return Subscription{}, err
	}
	switch {
	case n == 0:
		name, err := text(r, "platform")
		if err != nil {
			return Subscription{}, err
		}
		if sub.Platform = Platform(name); platformNumber(sub.Platform) != 0 {
			return Subscription{}, fmt.Errorf("%w: platform %q by name instead of its number", compact.ErrCorrupt, name)
		}
	case int(n) < len(compactPlatforms):
		sub.Platform = compactPlatforms[n]
	default:
		return Subscription{}, fmt.Errorf("%w: unknown platform number %d", compact.ErrCorrupt, n)
	}
	opts, err := r.Uvarint("options")
	if err != nil {
		return Subscription{}, err
	}
	if opts > math.MaxUint32 {
		return Subscription{}, fmt.Errorf("%w: options %d beyond 32 bits", compact.ErrCorrupt, opts)
	}
	sub.Options = Options(opts)
	if sub.InboxUnreadCount, err = r.Int("inboxUnreadCount"); err != nil {
		return Subscription{}, err
	}
	if sub.Tenant, err = text(r, "tenant"); err != nil {
		return Subscription{}, err
	}
	if sub.User, err = text(r, "user"); err != nil {
		return Subscription{}, err
	}
	if flags&subUserAtTenant != 0 {
		sub.User += "@" + sub.Tenant
	} else if strings.HasSuffix(sub.User, "@"+sub.Tenant) {
		return Subscription{}, fmt.Errorf("%w: user with its tenant's domain stored whole", compact.ErrCorrupt)
	}
	if sub.AppID, err = text(r, "appId"); err != nil {
		return Subscription{}, err
	}
	if sub.DeviceID, err = device(r, flags); err != nil {
		return Subscription{}, err
	}
	for _, f := range optionalTexts(&sub) {
		if flags&f.flag == 0 {
			continue
		}
		if *f.v, err = text(r, f.name); err != nil {
			return Subscription{}, err
		}
		if *f.v == "" {
			return Subscription{}, fmt.Errorf("%w: %s flagged but empty", compact.ErrCorrupt, f.name)
		}
	}
	if flags&subUpdated != 0 {
		if sub.LastSubscriptionUpdate, err = r.Time("lastSubscriptionUpdate"); err != nil {
			return Subscription{}, err
		}
	}
	return sub, r.End()
}

// text reads a string that must be valid UTF-8.
func text(r *compact.Reader, what string) (string, error) {
	s, err := r.String(what)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: %s is not valid UTF-8", compact.ErrCorrupt, what)
	}
	return s, nil
}

// device reads the device token, stored as hex bytes or as text as flags
// say.
func device(r *compact.Reader, flags uint64) (string, error) {
	if flags&(subHexLower|subHexUpper) == 0 {
		s, err := text(r, "deviceId")
		if err == nil && hexFlag(s) != 0 {
			err = fmt.Errorf("%w: a hex deviceId stored as text", compact.ErrCorrupt)
		}
		return s, err
	}
	raw, err := r.Bytes("deviceId")
	if err != nil {
		return "", err
	}
	s := hex.EncodeToString(raw)
	if flags&subHexUpper != 0 {
		s = strings.ToUpper(s)
	}
	if hexFlag(s) != flags&(subHexLower|subHexUpper) {
		return "", fmt.Errorf("%w: deviceId of %d bytes with hex flags %#x", compact.ErrCorrupt, len(raw), flags&(subHexLower|subHexUpper))
	}
	return s, nil
}
