package subscriptions_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/compact"
	"github.com/pushproxy/pushproxy/internal/storage"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// apnsToken is a device token as APNs hands it out: 32 bytes in hex.
const apnsToken = "3f9a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"

// stored is sub as a reader gets it back from a value: in UTC (the compact
// encoding keeps a time's instant, not its location; no reader looks at
// it), without Key and ExpiresAt (never stored).
func stored(sub subscriptions.Subscription) subscriptions.Subscription {
	sub.LastSubscriptionUpdate = sub.LastSubscriptionUpdate.UTC()
	sub.Key, sub.ExpiresAt = "", time.Time{}
	return sub
}

// TestEncodingRoundTrip: the compact encoding gives back exactly what JSON
// gives back, in fewer bytes.
func TestEncodingRoundTrip(t *testing.T) {
	updated := time.Date(2026, 3, 1, 12, 0, 0, 123_000_000, time.UTC)
	sub := func(change func(*subscriptions.Subscription)) subscriptions.Subscription {
		s := subscriptions.Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "com.fabrikam.mail", DeviceID: apnsToken,
			Platform: subscriptions.PlatformAPNS, Options: subscriptions.OptionEmail, Language: "en-GB", LastSubscriptionUpdate: updated}
		change(&s)
		return s
	}
	tests := []struct {
		name string
		sub  subscriptions.Subscription
	}{
		{"an APNs device", sub(func(*subscriptions.Subscription) {})},
		{"every field", sub(func(s *subscriptions.Subscription) {
			s.InboxUnreadCount, s.InstallationID, s.Label = 12, "inst-7", "Alice’s iPhone"
			s.Options = subscriptions.OptionEmail | subscriptions.OptionBackgroundSync | 1<<31
			s.Key, s.ExpiresAt = "never.stored", updated.Add(time.Hour)
		})},
		{"an upper-case token", sub(func(s *subscriptions.Subscription) { s.DeviceID = strings.ToUpper(apnsToken) })},
		{"a token of digits", sub(func(s *subscriptions.Subscription) { s.DeviceID = "0123456789" })},
		{"a token of mixed case", sub(func(s *subscriptions.Subscription) { s.DeviceID = "aBcD" })},
		{"a token of odd length", sub(func(s *subscriptions.Subscription) { s.DeviceID = "abc" })},
		{"an FCM token", sub(func(s *subscriptions.Subscription) {
			s.Platform, s.DeviceID = subscriptions.PlatformFCM, "fGcM-1:APA91bH_x"+strings.Repeat("k", 140)
		})},
		{"a Web Push subscription", sub(func(s *subscriptions.Subscription) {
			s.Platform, s.DeviceID = subscriptions.PlatformWebPush, `{"endpoint":"https://push.example/x","keys":{"p256dh":"BNc","auth":"tBH"}}`
		})},
		{"a user of another domain", sub(func(s *subscriptions.Subscription) { s.User = "alice@contoso.com" })},
		{"a user whose domain ends like the tenant", sub(func(s *subscriptions.Subscription) { s.User = "alice@notfabrikam.com" })},
		{"an unknown platform", sub(func(s *subscriptions.Subscription) { s.Platform = "Pager" })},
		{"no platform", sub(func(s *subscriptions.Subscription) { s.Platform = "" })},
		{"never refreshed", sub(func(s *subscriptions.Subscription) { s.LastSubscriptionUpdate = time.Time{} })},
		{"refreshed at a nanosecond in another zone", sub(func(s *subscriptions.Subscription) {
			s.LastSubscriptionUpdate = updated.Add(1).In(time.FixedZone("", 5*3600))
		})},
		{"a negative count", sub(func(s *subscriptions.Subscription) { s.InboxUnreadCount = -1 })},
		{"empty", subscriptions.Subscription{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asJSON, err := subscriptions.Encode(tt.sub, storage.JSON)
			if err != nil {
				t.Fatal(err)
			}
			fromJSON, err := subscriptions.Decode(asJSON)
			if err != nil {
				t.Fatal(err)
			}
			packed, err := subscriptions.Encode(tt.sub, storage.Compact)
			if err != nil {
				t.Fatal(err)
			}
			if packed[0] != compact.Version1 {
				t.Fatalf("first byte %#x, want the version", packed[0])
			}
			fromCompact, err := subscriptions.Decode(packed)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(stored(fromJSON), fromCompact) || !reflect.DeepEqual(fromCompact, stored(tt.sub)) {
				t.Fatalf("compact gives back\n%+v\nJSON gives back\n%+v", fromCompact, stored(fromJSON))
			}
			if len(packed) >= len(asJSON) {
				t.Errorf("compact %d bytes, JSON %d", len(packed), len(asJSON))
			}
		})
	}
}

// TestEncodingSize: an APNs device in a little over half of what its
// names take, its token in 32 bytes.
func TestEncodingSize(t *testing.T) {
	sub := subscriptions.Subscription{Tenant: "fabrikam.com", User: "user123456@fabrikam.com", AppID: "com.fabrikam.mail", DeviceID: apnsToken,
		Platform: subscriptions.PlatformAPNS, Options: subscriptions.OptionEmail, Language: "en-GB",
		LastSubscriptionUpdate: time.Date(2026, 3, 1, 12, 0, 0, 123_000_000, time.UTC)}
	packed, err := subscriptions.Encode(sub, storage.Compact)
	if err != nil {
		t.Fatal(err)
	}
	// version, flags, platform, options, count; tenant, the user's name,
	// app, token, language with their lengths; a time.
	if want := 5 + (1 + 12) + (1 + 10) + (1 + 17) + (1 + 32) + (1 + 5) + 6; len(packed) != want {
		t.Errorf("compact subscription of %d bytes, want %d: %x", len(packed), want, packed)
	}
}

// TestEncodeRefuses: the compact encoding writes text as it is, so it
// refuses text that is not UTF-8 (JSON would change it) and times JSON
// cannot write.
func TestEncodeRefuses(t *testing.T) {
	tests := []struct {
		name string
		sub  subscriptions.Subscription
	}{
		{"a label that is not UTF-8", subscriptions.Subscription{Label: "\xff"}},
		{"a device that is not UTF-8", subscriptions.Subscription{DeviceID: "a\xc0"}},
		{"year 10000", subscriptions.Subscription{LastSubscriptionUpdate: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := subscriptions.Encode(tt.sub, storage.Compact); err == nil {
				t.Fatalf("Encode = %x, want an error", b)
			}
		})
	}
}

// TestDecodeErrors: what is neither a compact subscription in its one
// form nor JSON gives an error.
func TestDecodeErrors(t *testing.T) {
	v := compact.Version1
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"empty", nil, nil},
		{"not JSON", []byte(`{"tenant":`), nil},
		{"a later version", []byte{0x03, 0}, compact.ErrVersion},
		{"only the version", []byte{v}, compact.ErrCorrupt},
		{"unknown flags", []byte{v, 0x80, 0x01, 1, 0, 0, 0, 0, 0, 0}, compact.ErrCorrupt},
		{"both hex flags", []byte{v, 0x03, 1, 0, 0, 0, 0, 0, 1, 0xab}, compact.ErrCorrupt},
		{"an unknown platform number", []byte{v, 0, 7, 0, 0, 0, 0, 0, 1, 'x'}, compact.ErrCorrupt},
		{"a known platform by name", []byte{v, 0, 0, 4, 'A', 'P', 'N', 'S', 0, 0, 0, 0, 0, 1, 'x'}, compact.ErrCorrupt},
		{"options beyond 32 bits", []byte{v, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0, 0, 1, 'x'}, compact.ErrCorrupt},
		{"a hex token stored as text", []byte{v, 0, 1, 0, 0, 0, 0, 0, 2, 'a', 'b'}, compact.ErrCorrupt},
		{"an upper-case token of digits", []byte{v, 0x02, 1, 0, 0, 0, 0, 0, 1, 0x12}, compact.ErrCorrupt},
		{"an empty hex token", []byte{v, 0x01, 1, 0, 0, 0, 0, 0, 0}, compact.ErrCorrupt},
		{"a user with the tenant's domain stored whole", []byte{v, 0, 1, 0, 0, 1, 'a', 3, 'b', '@', 'a', 0, 1, 'x'}, compact.ErrCorrupt},
		{"text that is not UTF-8", []byte{v, 0, 1, 0, 0, 1, 0xff, 0, 0, 1, 'x'}, compact.ErrCorrupt},
		{"a language flagged but empty", []byte{v, 0x08, 1, 0, 0, 0, 0, 0, 1, 'x', 0}, compact.ErrCorrupt},
		{"a time missing", []byte{v, 0x40, 1, 0, 0, 0, 0, 0, 1, 'x'}, compact.ErrCorrupt},
		{"left over", []byte{v, 0, 1, 0, 0, 0, 0, 0, 1, 'x', 0}, compact.ErrCorrupt},
		{"a length beyond the end", []byte{v, 0, 1, 0, 0, 9, 'a'}, compact.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := subscriptions.Decode(tt.data)
			if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode = %+v, %v; want an error matching %v", sub, err, tt.wantErr)
			}
		})
	}
	// The smallest valid value of the table's shape reads.
	if _, err := subscriptions.Decode([]byte{v, 0, 1, 0, 0, 0, 0, 0, 1, 'x'}); err != nil {
		t.Fatalf("a minimal compact subscription: %v", err)
	}
}

// FuzzDecodeSubscription: Decode never panics; whatever it reads, both
// encodings write and give back unchanged; a compact value has one form;
// and a JSON value read through the compact encoding is what JSON reads.
func FuzzDecodeSubscription(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		sub, err := subscriptions.Decode(data)
		if err != nil {
			return
		}
		if sub.Key != "" || !sub.ExpiresAt.IsZero() {
			t.Fatalf("Decode filled in Key or ExpiresAt: %+v", sub)
		}
		if at := sub.LastSubscriptionUpdate; !at.IsZero() && (at.UTC().Year() < 0 || at.UTC().Year() > 9999) {
			if _, err := subscriptions.Encode(sub, storage.Compact); err == nil {
				t.Fatalf("a time beyond the years 0 to 9999 encoded: %v", at)
			}
			return // an offset lets JSON read instants just outside
		}
		for _, enc := range []storage.Encoding{storage.JSON, storage.Compact} {
			b, err := subscriptions.Encode(sub, enc)
			if err != nil {
				t.Fatalf("%s: Encode(%+v): %v", enc, sub, err)
			}
			back, err := subscriptions.Decode(b)
			if err != nil {
				t.Fatalf("%s: Decode(Encode(%+v)) = %v", enc, sub, err)
			}
			if !reflect.DeepEqual(stored(back), stored(sub)) {
				t.Fatalf("%s: read %+v, gives back %+v", enc, sub, back)
			}
			if enc == storage.Compact && data[0] == compact.Version1 && string(b) != string(data) {
				t.Fatalf("%x is read as %+v, which encodes as %x", data, sub, b)
			}
		}
	})
}
