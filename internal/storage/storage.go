// Package storage says how the values of the two big buckets, unread (user
// states) and subscriptions, are written: as JSON, or in their compact
// encodings (unread.Encode, subscriptions.Encode). Readers read both,
// always; writers write what the storage settings say, one value for the
// whole deployment kept in the config bucket under Key.
//
// The settings change in two ways: an operator sets them (pushctl storage
// encoding compact|json) after every process runs a release that reads
// the compact encoding, and provisioning records Compact for a new
// installation (InitNew). Without them writers write JSON, so that a
// deployment upgraded while processes of an earlier release, which read
// only JSON, still run stays readable by them.
//
// Writers ask a Switch before each write; it reads the settings on its
// first use and again, in the background, when asked after Refresh has
// passed since its last read, so a change reaches every writer within
// seconds without a restart.
package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Key is the config bucket's key of the storage settings.
const Key = "storage"

// Encoding is how writers encode values.
type Encoding string

// The encodings.
const (
	// JSON is the encoding of every release; the default.
	JSON Encoding = "json"
	// Compact is the compact encoding: a version byte, then varints and
	// length-prefixed fields.
	Compact Encoding = "compact"
)

// ErrInvalid is wrapped by the error about an unknown encoding.
var ErrInvalid = errors.New("invalid storage setting")

// ParseEncoding returns the encoding named s, ignoring case and spaces.
func ParseEncoding(s string) (Encoding, error) {
	switch e := Encoding(strings.ToLower(strings.TrimSpace(s))); e {
	case JSON, Compact:
		return e, nil
	default:
		return "", fmt.Errorf("%w: encoding %q is neither %s nor %s", ErrInvalid, s, JSON, Compact)
	}
}

// Settings are the storage settings.
type Settings struct {
	// Encoding is what writers of the unread and subscriptions buckets write.
	Encoding Encoding `json:"encoding"`
	// ChangedAt is when they were last set.
	ChangedAt time.Time `json:"changed_at,omitzero"`
	// By says what set them: ByOperator or ByNewInstallation.
	By string `json:"by,omitempty"`
}

// What set the settings.
const (
	ByOperator        = "pushctl storage encoding"
	ByNewInstallation = "provisioning of a new installation"
)

// Reads are the encodings this release reads: all of them. Dispatchers
// announce them in their heartbeats, so that pushctl storage encoding
// compact can refuse while one of an earlier release, which reads only
// JSON, still runs.
func Reads() []Encoding { return []Encoding{JSON, Compact} }

// Default is what writers use while no settings are stored.
func Default() Settings { return Settings{Encoding: JSON} }

// Read returns the settings stored in kv (the config bucket), and whether
// there are any; Default when there are none.
func Read(ctx context.Context, kv jetstream.KeyValue) (Settings, bool, error) {
	entry, err := kv.Get(ctx, Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Default(), false, nil
	}
	if err != nil {
		return Default(), false, fmt.Errorf("reading the storage settings: %w", err)
	}
	s, err := decode(entry.Value())
	if err != nil {
		return Default(), false, err
	}
	return s, true, nil
}

func decode(data []byte) (Settings, error) {
	var s Settings
	if err := json.Unmarshal(data, &s); err != nil {
		return Settings{}, fmt.Errorf("decoding the storage settings: %w", err)
	}
	enc, err := ParseEncoding(string(s.Encoding))
	if err != nil {
		return Settings{}, fmt.Errorf("decoding the storage settings: %w", err)
	}
	s.Encoding = enc
	return s, nil
}

// maxAttempts bounds SetEncoding's revision-checked writes.
const maxAttempts = 10

// SetEncoding stores enc in kv (the config bucket), set at now by by, and
// returns the settings and whether they changed: setting the encoding
// already stored changes nothing.
func SetEncoding(ctx context.Context, kv jetstream.KeyValue, enc Encoding, by string, now time.Time) (Settings, bool, error) {
	enc, err := ParseEncoding(string(enc))
	if err != nil {
		return Settings{}, false, err
	}
	for range maxAttempts {
		var rev uint64
		entry, err := kv.Get(ctx, Key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return Settings{}, false, fmt.Errorf("reading the storage settings: %w", err)
		default:
			cur, err := decode(entry.Value())
			if err == nil && cur.Encoding == enc {
				return cur, false, nil
			}
			rev = entry.Revision()
		}
		next := Settings{Encoding: enc, ChangedAt: now.UTC().Truncate(time.Second), By: by}
		data, err := json.Marshal(next)
		if err != nil {
			return Settings{}, false, fmt.Errorf("encoding the storage settings: %w", err)
		}
		if rev == 0 {
			_, err = kv.Create(ctx, Key, data)
		} else {
			_, err = kv.Update(ctx, Key, data, rev)
		}
		switch {
		case err == nil:
			return next, true, nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			continue // another writer won: read again
		default:
			return Settings{}, false, fmt.Errorf("saving the storage settings: %w", err)
		}
	}
	return Settings{}, false, errors.New("saving the storage settings: too many concurrent writers")
}

// InitNew records Compact in kv (the config bucket) for a new
// installation, unless settings are stored already. Provisioning calls it
// only when it created the config, unread and subscriptions buckets
// itself: no process of any release has read or written them, so no
// reader that knows only JSON can meet a compact value, unless a process
// of an earlier release is started against the new installation later
// (see pushctl storage encoding --help).
func InitNew(ctx context.Context, kv jetstream.KeyValue, now time.Time) error {
	data, err := json.Marshal(Settings{Encoding: Compact, ChangedAt: now.UTC().Truncate(time.Second), By: ByNewInstallation})
	if err != nil {
		return fmt.Errorf("encoding the storage settings: %w", err)
	}
	if _, err := kv.Create(ctx, Key, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("saving the storage settings of a new installation: %w", err)
	}
	return nil
}
