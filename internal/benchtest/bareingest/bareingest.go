// Package bareingest is ingest's anchor in the benchmarks: a bare net/http
// handler that stores each event of a request (one JSON event, a JSON
// array of them, or NDJSON lines) in the MAIL stream with its change id as
// Nats-Msg-Id, and does nothing else (no credentials, validation,
// completion, metrics or limits).
// One event is published synchronously; the events of a batch are
// published asynchronously and their acknowledgements awaited together, as
// ingest does. A benchmark comparing ingest with it over the same HTTP
// client measures what ingest adds to storing events.
package bareingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/httpjson"
)

// Handler is the bare handler. Its fields must be set before it serves.
type Handler struct {
	// JS publishes; its async publishes are the batches'.
	JS jetstream.JetStream
	// Subject is the stored subject of a user's event.
	Subject func(user string) string
}

// event is what the handler reads of an event: the two fields it needs.
type event struct {
	User     string `json:"user"`
	ChangeID string `json:"change_id"`
}

// ServeHTTP stores the request's events and answers {"accepted": n}, or a
// 400 for an event it cannot decode (nothing stored) and a 503 when the
// stream did not take them.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusBadRequest, Code: "unreadable", Message: "reading the request: " + err.Error()})
		return
	}
	lines, err := split(body)
	if err != nil {
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusBadRequest, Code: "invalid_event", Message: err.Error()})
		return
	}
	msgs := make([]*nats.Msg, len(lines))
	for i, line := range lines {
		if msgs[i], err = h.message(line); err != nil {
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusBadRequest, Code: "invalid_event", Message: err.Error()})
			return
		}
	}
	if err := h.publish(r.Context(), msgs); err != nil {
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: err.Error()})
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]int{"accepted": len(msgs)})
}

// split returns the events of a body: the elements of a JSON array, or
// its lines.
func split(body []byte) ([][]byte, error) {
	body = bytes.TrimSpace(body)
	if !bytes.HasPrefix(body, []byte("[")) {
		return bytes.Split(body, []byte("\n")), nil
	}
	var events []json.RawMessage
	if err := json.Unmarshal(body, &events); err != nil {
		return nil, fmt.Errorf("decoding an array of events: %w", err)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("decoding an array of events: it is empty")
	}
	lines := make([][]byte, len(events))
	for i, e := range events {
		lines[i] = e
	}
	return lines, nil
}

// message is the stored message of one event: the line as it came.
func (h *Handler) message(line []byte) (*nats.Msg, error) {
	var e event
	if err := json.Unmarshal(line, &e); err != nil {
		return nil, fmt.Errorf("decoding an event: %w", err)
	}
	return &nats.Msg{Subject: h.Subject(e.User), Data: line, Header: nats.Header{jetstream.MsgIDHeader: []string{e.ChangeID}}}, nil
}

// publish stores msgs: one with a synchronous publish, several with
// asynchronous publishes whose acknowledgements it then awaits.
func (h *Handler) publish(ctx context.Context, msgs []*nats.Msg) error {
	if len(msgs) == 1 {
		if _, err := h.JS.PublishMsg(ctx, msgs[0]); err != nil {
			return fmt.Errorf("publishing an event: %w", err)
		}
		return nil
	}
	acks := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		var err error
		if acks[i], err = h.JS.PublishMsgAsync(m); err != nil {
			return fmt.Errorf("publishing an event: %w", err)
		}
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			return fmt.Errorf("publishing an event: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
