package unread

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxBatchKeys bounds the keys of one batched read; the server answers at
// most 1024 messages per request.
const maxBatchKeys = 256

// Loaded is a state read by Store.GetMany with its revision (0: none stored).
type Loaded struct {
	State State
	Rev   uint64
}

// batchReader reads the last entries of many keys with one direct get
// request (multi_last, server 2.11 or later) instead of one request each.
type batchReader struct {
	nc *nats.Conn
	// subject is the direct get subject of the bucket's stream; pre is
	// what precedes a key in the bucket's subjects.
	subject, pre string
	// timeout bounds the wait for an answer.
	timeout time.Duration
}

// newBatchReader returns a reader for kv when batched reads can give
// exactly what KeyValue.Get gives: the default API prefix, the bucket's
// own subjects (no mirror) and direct gets allowed. Otherwise nil.
func newBatchReader(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) *batchReader {
	opts := js.Options()
	if opts.Domain != "" || (opts.APIPrefix != "" && opts.APIPrefix != jetstream.DefaultAPIPrefix) {
		return nil
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil
	}
	s, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || s.StreamInfo() == nil {
		return nil
	}
	cfg := s.StreamInfo().Config
	if !cfg.AllowDirect || cfg.Mirror != nil {
		return nil
	}
	return &batchReader{
		nc:      js.Conn(),
		subject: jetstream.DefaultAPIPrefix + "DIRECT.GET." + cfg.Name,
		pre:     "$KV." + kv.Bucket() + ".",
		timeout: cmp.Or(opts.DefaultTimeout, 5*time.Second),
	}
}

// errIncomplete: the server's answer did not cover every key.
var errIncomplete = errors.New("batched read incomplete")

// read fills out[i] for keys[i]. A key absent from a complete answer has no
// entry. It fails (and the caller reads key by key) when the answer is not
// complete or not understood.
func (b *batchReader) read(ctx context.Context, keys []string, out []Loaded) error {
	subjects := make([]string, len(keys))
	index := make(map[string]int, len(keys))
	for i, k := range keys {
		subjects[i] = b.pre + k
		index[subjects[i]] = i
	}
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Batch     int      `json:"batch"`
	}{subjects, len(subjects)})
	if err != nil {
		return err
	}
	// A request nobody answers (no direct get here, no permission) must
	// not hang the caller: wait at most the JetStream default timeout,
	// then the caller reads key by key.
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	inbox := b.nc.NewRespInbox()
	ch := make(chan *nats.Msg, len(keys)+1)
	sub, err := b.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := b.nc.PublishRequest(b.subject, inbox, req); err != nil {
		return err
	}
	for {
		var m *nats.Msg
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m = <-ch:
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			switch m.Header.Get("Status") {
			case "204": // end of batch
				if m.Header.Get("Nats-Num-Pending") != "0" {
					return errIncomplete
				}
				return nil
			case "404":
				// "No Results": none of the keys has an entry. Other 404s
				// (an entry that failed to load) are not an answer.
				if m.Header.Get("Description") == "No Results" {
					return nil
				}
				return fmt.Errorf("%w: status 404 %s", errIncomplete, m.Header.Get("Description"))
			default:
				return fmt.Errorf("%w: status %s %s", errIncomplete, m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
		subj := m.Header.Get(jetstream.SubjectHeader)
		i, ok := index[subj]
		if !ok {
			return fmt.Errorf("%w: unexpected subject %q", errIncomplete, subj)
		}
		rev, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return fmt.Errorf("%w: sequence of %s: %w", errIncomplete, subj, err)
		}
		if deleted(m.Header) {
			out[i] = Loaded{}
			continue
		}
		var st State
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return fmt.Errorf("decoding unread state %s: %w", strings.TrimPrefix(subj, b.pre), err)
		}
		out[i] = Loaded{State: st, Rev: rev}
	}
}

// deleted reports whether an entry is a delete or purge marker, the way
// KeyValue.Get decides it (it then answers "not found").
func deleted(h nats.Header) bool {
	if op := h.Get("KV-Operation"); op != "" {
		return op == "DEL" || op == "PURGE"
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge", "Purge", "Remove":
		return true
	}
	return false
}
