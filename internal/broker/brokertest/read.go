package brokertest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
)

// Messages returns every message stored in stream, in order, skipping the
// sequences of deleted messages.
func Messages(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("opening stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("reading stream %s: %v", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	return out
}

// Events returns every event in the MAIL stream, in order, failing the test
// if one does not decode.
func Events(t testing.TB, js jetstream.JetStream) []events.Event {
	t.Helper()
	var out []events.Event
	for _, m := range Messages(t, js, broker.StreamMail) {
		e, err := events.Decode(m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", m.Sequence, err)
		}
		out = append(out, e)
	}
	return out
}
