package unread

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/pushproxy/pushproxy/internal/compact"
	"github.com/pushproxy/pushproxy/internal/storage"
)

// The compact encoding of a state, version 1 (compact.Version1):
//
//	version          1 byte, compact.Version1
//	flags            1 byte: stateExact, and which of the optional fields follow
//	Count            signed varint
//	LastSeq          unsigned varint
//	LastEventAt      time (compact.AppendTime), if stateLastEventAt
//	LastPushedCount  signed varint, if stateLastPushedCount
//	LastPushedAt     time, if stateLastPushedAt
//	LastPushedSeq    unsigned varint
//
// A zero time is left out, as JSON leaves it out.
const (
	stateExact byte = 1 << iota
	stateLastEventAt
	stateLastPushedCount
	stateLastPushedAt

	stateFlags = stateExact | stateLastEventAt | stateLastPushedCount | stateLastPushedAt
)

// Encode returns st in enc, as Store writes it.
func Encode(st State, enc storage.Encoding) ([]byte, error) {
	if enc != storage.Compact {
		return json.Marshal(st)
	}
	var flags byte
	if st.Exact {
		flags |= stateExact
	}
	if !st.LastEventAt.IsZero() {
		flags |= stateLastEventAt
	}
	if st.LastPushedCount != nil {
		flags |= stateLastPushedCount
	}
	if !st.LastPushedAt.IsZero() {
		flags |= stateLastPushedAt
	}
	b := make([]byte, 0, 48)
	b = append(b, compact.Version1, flags)
	b = compact.AppendInt(b, st.Count)
	b = binary.AppendUvarint(b, st.LastSeq)
	var err error
	if flags&stateLastEventAt != 0 {
		if b, err = compact.AppendTime(b, st.LastEventAt); err != nil {
			return nil, fmt.Errorf("last event time: %w", err)
		}
	}
	if flags&stateLastPushedCount != 0 {
		b = compact.AppendInt(b, *st.LastPushedCount)
	}
	if flags&stateLastPushedAt != 0 {
		if b, err = compact.AppendTime(b, st.LastPushedAt); err != nil {
			return nil, fmt.Errorf("last push time: %w", err)
		}
	}
	return binary.AppendUvarint(b, st.LastPushedSeq), nil
}

// Decode reads a state in either encoding: JSON, which every release
// wrote, or the compact one, told apart by the first byte. It is the one
// decoder of the states of the bucket.
func Decode(data []byte) (State, error) {
	return compact.Decode(data, decodeCompact)
}

// decodeCompact reads the fields after the version byte.
func decodeCompact(r *compact.Reader) (State, error) {
	var st State
	flags, err := r.Byte("flags")
	if err != nil {
		return State{}, err
	}
	if flags&^stateFlags != 0 {
		return State{}, fmt.Errorf("%w: unknown flags %#x", compact.ErrCorrupt, flags&^stateFlags)
	}
	st.Exact = flags&stateExact != 0
	if st.Count, err = r.Int("count"); err != nil {
		return State{}, err
	}
	if st.LastSeq, err = r.Uvarint("last sequence"); err != nil {
		return State{}, err
	}
	if flags&stateLastEventAt != 0 {
		if st.LastEventAt, err = r.Time("last event time"); err != nil {
			return State{}, err
		}
	}
	if flags&stateLastPushedCount != 0 {
		n, err := r.Int("last pushed count")
		if err != nil {
			return State{}, err
		}
		st.LastPushedCount = &n
	}
	if flags&stateLastPushedAt != 0 {
		if st.LastPushedAt, err = r.Time("last push time"); err != nil {
			return State{}, err
		}
	}
	if st.LastPushedSeq, err = r.Uvarint("last pushed sequence"); err != nil {
		return State{}, err
	}
	return st, r.End()
}
