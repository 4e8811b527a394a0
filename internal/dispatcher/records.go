package dispatcher

import (
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
	Tenant  string `json:"tenant"`
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
	// reported gone, Rejected how many it refused.
	Devices  int `json:"devices"`
	Gone     int `json:"gone,omitempty"`
	Rejected int `json:"rejected,omitempty"`
	// Attempts counts the relay requests it took, retries included.
	Attempts int `json:"attempts"`
	// LatencyMS is how long the relay request took, retries included.
	LatencyMS float64 `json:"latency_ms"`
	// EventToPushMS is the time from the earliest covered event (as ingest
	// received it, or as it occurred) to the relay's answer.
	EventToPushMS float64   `json:"event_to_push_ms"`
	SentAt        time.Time `json:"sent_at"`
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
	FirstEventAt  time.Time         `json:"first_event_at,omitzero"`
	DeadAt        time.Time         `json:"dead_at"`
}

// SentSubject is the PUSH_SENT subject of a user key.
func SentSubject(userKey string) string { return broker.SubjectSent + "." + userKey }

// DeadSubject is the PUSH_DEAD subject of a user key.
func DeadSubject(userKey string) string { return broker.SubjectDead + "." + userKey }
