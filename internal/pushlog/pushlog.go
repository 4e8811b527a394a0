// Package pushlog holds the records of pushes that cross process
// boundaries: what was sent (stream PUSH_SENT), what could not be delivered
// (stream PUSH_DEAD) and what a device-gone verdict removed (KV bucket
// tombstones), with their encoding and subjects.
//
// Engines (the dispatcher, redrive, replay, the probe, through
// internal/delivery) write these records; readers (the monitor, pushctl,
// replay comparisons) import this package, never an engine, to read them.
package pushlog

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// SentRecord is the message recorded in stream PUSH_SENT for every push the
// relay accepted, on subject push.sent.<tenant token>.<user token>. The
// canary, replay comparisons and operators read it.
type SentRecord struct {
	// ID is the notification id sent to the relay.
	ID string `json:"id"`
	// BatchID identifies the relay request that carried it, shared by the
	// notifications of one request.
	BatchID string `json:"batch_id"`
	// Tenant is the tenant (mail domain) of the user.
	Tenant string `json:"tenant"`
	// UserKey is the user's key (<tenant token>.<user token>); the address
	// itself is not recorded.
	UserKey string `json:"user_key"`
	// Count is the unread count pushed; Exact says whether it was exact.
	Count int  `json:"count"`
	Exact bool `json:"exact"`
	// Previous is the count pushed before, if any.
	Previous *int `json:"previous,omitempty"`
	// FirstSeq and LastSeq are the MAIL stream sequences of the first and
	// last event the push covers; Events is how many it covers.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Events   int    `json:"events"`
	// Devices is how many devices it was sent to; Gone how many the relay
	// reported gone, Rejected how many it refused (app faults, devices
	// that kept failing).
	Devices  int `json:"devices"`
	Gone     int `json:"gone,omitempty"`
	Rejected int `json:"rejected,omitempty"`
	// Attempts counts the relay requests it took, retries included.
	Attempts int `json:"attempts"`
	// LatencyMS is how long the relay request took, retries included.
	LatencyMS float64 `json:"latency_ms"`
	// EventToPushMS is the time from the earliest covered event (as ingest
	// received it, or as it occurred) to the relay's answer.
	EventToPushMS float64 `json:"event_to_push_ms"`
	// SentAt is when the relay answered.
	SentAt time.Time `json:"sent_at"`
	// Origin says who sent it: "" or "dispatcher", "redrive", "replay".
	Origin string `json:"origin,omitempty"`
}

// Dead-letter reasons.
const (
	ReasonPermanent       = "permanent"        // the relay refused the request for good
	ReasonExhausted       = "exhausted"        // retries ran out while the relay was up
	ReasonRejected        = "rejected"         // the relay rejected some devices
	ReasonDeviceRetries   = "device_retries"   // devices kept asking for a retry
	ReasonMissingResponse = "missing_response" // the relay kept answering without this notification
)

// DeadLetter is the message published to stream PUSH_DEAD, on subject
// push.dead.<tenant token>.<user token>, for a notification that could not
// be delivered. Its events are acknowledged: the dead letter is their
// record, for pushctl to list and redrive.
type DeadLetter struct {
	// Tenant and User name the user; UserKey is its key.
	Tenant  string `json:"tenant"`
	User    string `json:"user"`
	UserKey string `json:"user_key"`
	// Reason is one of the Reason* constants.
	Reason string `json:"reason"`
	// Attempts counts the relay requests made.
	Attempts int `json:"attempts"`
	// LastError is the last failure, in the relay client's words.
	LastError string `json:"last_error"`
	// Sequences are the MAIL stream sequences of the events covered.
	Sequences []uint64 `json:"sequences"`
	// Notification is what could not be delivered; for rejected devices,
	// only those devices are its recipients.
	Notification relayproto.Notification `json:"notification"`
	// DeviceReasons gives the relay's reason per rejected device
	// (appId/device reference, never the device id itself).
	DeviceReasons map[string]string `json:"device_reasons,omitempty"`
	// FirstEventAt is when the earliest covered event happened.
	FirstEventAt time.Time `json:"first_event_at,omitzero"`
	// DeadAt is when the notification was given up.
	DeadAt time.Time `json:"dead_at"`
}

// SentSubject is the PUSH_SENT subject of a user key.
func SentSubject(userKey string) string { return broker.SubjectSent + "." + userKey }

// DeadSubject is the PUSH_DEAD subject of a user key.
func DeadSubject(userKey string) string { return broker.SubjectDead + "." + userKey }

// Encode encodes a record as stored (JSON).
func Encode[R SentRecord | DeadLetter | Tombstone](r R) ([]byte, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding %T: %w", r, err)
	}
	return data, nil
}

// Decode decodes a stored record.
func Decode[R SentRecord | DeadLetter | Tombstone](data []byte) (R, error) {
	var r R
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("decoding %T: %w", r, err)
	}
	return r, nil
}
