package storage

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Refresh is how long a Switch goes on with the encoding it read before
// it reads the settings again; the dispatchers read the proxy settings as
// often.
const Refresh = 5 * time.Second

// readTimeout bounds one read of the settings.
const readTimeout = 2 * time.Second

// Switch tells a writer which encoding to write. It reads the settings
// from the config bucket when first asked (the writers wait for that
// read) and again when asked after Refresh has passed since its last read
// (in the background: the writer goes on with the encoding it had). Until
// it has read them, while none are stored and while they cannot be read,
// it says JSON, which every release reads. It is safe for concurrent use;
// a nil Switch says JSON.
type Switch struct {
	js     jetstream.JetStream
	bucket string
	// every is how often the settings are read again (Refresh).
	every time.Duration
	// fixed, when set, is the answer; nothing is read.
	fixed Encoding
	// first is closed when the first read has ended.
	first chan struct{}

	mu  sync.Mutex
	kv  jetstream.KeyValue
	cur Encoding
	// readAt is when the last read started (zero before the first);
	// reading is whether one is in flight.
	readAt  time.Time
	reading bool
}

// NewSwitch follows the storage settings in bucket (the config bucket,
// broker.BucketConfig) of js.
func NewSwitch(js jetstream.JetStream, bucket string) *Switch {
	return &Switch{js: js, bucket: bucket, every: Refresh, cur: JSON, first: make(chan struct{})}
}

// Fixed is a Switch that always says enc and reads nothing: for tests and
// tools that write one encoding on purpose.
func Fixed(enc Encoding) *Switch { return &Switch{fixed: enc} }

// Encoding is the encoding to write now. ctx bounds the wait for the
// first read of the settings.
func (s *Switch) Encoding(ctx context.Context) Encoding {
	if s == nil {
		return JSON
	}
	if s.fixed != "" {
		return s.fixed
	}
	s.mu.Lock()
	first := s.readAt.IsZero()
	start := !s.reading && (first || time.Since(s.readAt) >= s.every)
	if start {
		s.reading, s.readAt = true, time.Now()
	}
	s.mu.Unlock()
	switch {
	case start && first:
		s.read(ctx)
		close(s.first)
	case start:
		go s.read(context.WithoutCancel(ctx))
	}
	select {
	case <-s.first:
	case <-ctx.Done():
		return JSON // not read yet
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// read reads the settings and keeps their encoding; after an error it
// keeps the encoding it had, to try again after Refresh.
func (s *Switch) read(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	enc, err := s.fetch(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reading = false
	if err == nil {
		s.cur = enc
	}
}

// fetch reads the settings' encoding, opening the bucket on first use.
// Only one read is in flight at a time.
func (s *Switch) fetch(ctx context.Context) (Encoding, error) {
	if s.kv == nil {
		kv, err := s.js.KeyValue(ctx, s.bucket)
		if err != nil {
			return "", err
		}
		s.kv = kv
	}
	st, _, err := Read(ctx, s.kv)
	return st.Encoding, err
}
