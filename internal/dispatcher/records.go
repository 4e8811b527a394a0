package dispatcher

import "github.com/pushproxy/pushproxy/internal/pushlog"

// The records a push leaves behind live in internal/pushlog, which readers
// import; these names keep the dispatcher's own code short.
type (
	// SentRecord is pushlog.SentRecord.
	SentRecord = pushlog.SentRecord
	// DeadLetter is pushlog.DeadLetter.
	DeadLetter = pushlog.DeadLetter
)

// Dead-letter reasons, as in pushlog.
const (
	ReasonPermanent       = pushlog.ReasonPermanent
	ReasonExhausted       = pushlog.ReasonExhausted
	ReasonRejected        = pushlog.ReasonRejected
	ReasonDeviceRetries   = pushlog.ReasonDeviceRetries
	ReasonMissingResponse = pushlog.ReasonMissingResponse
)

// SentSubject is pushlog.SentSubject.
func SentSubject(userKey string) string { return pushlog.SentSubject(userKey) }

// DeadSubject is pushlog.DeadSubject.
func DeadSubject(userKey string) string { return pushlog.DeadSubject(userKey) }
