// Package providers is the contract between the relay and the device push
// services it forwards badges to (APNs, FCM, Web Push, and a built-in
// logging provider).
//
// Each push service is one small package under this one, with a Config
// struct and a New constructor taking the shared Options (client, trusted
// CAs, logger), in the style of Alertmanager's notify integrations. The relay only needs the Provider interface and the Error
// type: a failed Send tells it whether the device is gone (remove the
// subscription), whether trying again later may work (and after how long),
// or neither (a permanent failure, usually configuration).
package providers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Badge is what the relay asks a provider to deliver to one device.
type Badge struct {
	// Tenant is the organisation, taken from the verified S2S token.
	Tenant string
	// AppID identifies the app the device subscription belongs to.
	AppID string
	// Device is the provider's address of the device: an APNs device token
	// (hex), an FCM registration token, or a Web Push subscription as JSON
	// ({"endpoint":...,"keys":{"p256dh":...,"auth":...}}). It may carry
	// secrets (Web Push keys): log Ref(), never Device.
	Device string
	// Count is the unread count to show on the badge. Negative values are
	// sent as 0.
	Count int
	// BackgroundSync also asks the app to sync in the background.
	BackgroundSync bool
	// Language is the user's language tag (e.g. "es-ES"), if known.
	Language string
	// ID identifies the notification (used as apns-id when it is a UUID, and
	// in logs).
	ID string
}

// Provider delivers badges to devices through one push service.
// Implementations are safe for concurrent use.
type Provider interface {
	// Name is the provider's short name ("apns", "fcm", "webpush", "log"),
	// for logs and metrics.
	Name() string
	// Send delivers b. The providers in this module fail only with an
	// *Error; test it with IsGone, IsRetryable and RetryAfter.
	Send(ctx context.Context, b Badge) error
}

// A Multiplexer is a Provider whose badges go to more than one push
// service, by their device address: a Web Push subscription names its
// browser's push service in its endpoint. The relay keeps each push
// service's outage apart, so that one failing does not hold the sends to
// the others.
type Multiplexer interface {
	Provider
	// Service names the push service b goes to (a host, never a device
	// address), or reports false when b's address names none; Send then
	// fails for the device alone.
	Service(b Badge) (string, bool)
}

// Class is how a push service's answer is taken; each provider maps its
// answers to classes with one table of Rules (see Classify), which the
// relay reports as the fault classes of the relay protocol.
type Class uint8

// Classes of a failed send.
const (
	// AppFault: the app cannot send (bad key, certificate, service
	// account or VAPID key, provider authentication, configuration, a
	// payload the service refuses): keep the subscription. It is also the
	// class of an answer no rule knows, so that nothing unknown removes a
	// subscription.
	AppFault Class = iota
	// DeviceGone: the device address is no longer valid.
	DeviceGone
	// Transient: trying again later may succeed (429, 5xx, network).
	Transient
)

// String names the class.
func (c Class) String() string {
	switch c {
	case DeviceGone:
		return "device gone"
	case Transient:
		return "transient"
	}
	return "app fault"
}

// Rule is one row of a provider's answer table: an answer with HTTP
// status Status (or any status from Status to StatusTo, when StatusTo is
// set; any status when both are 0) and reason code Reason (any when empty)
// is of class Class, and when transient waits at least MinRetryAfter.
type Rule struct {
	Status, StatusTo int
	Reason           string
	Class            Class
	MinRetryAfter    time.Duration
}

// matches reports whether the rule covers an answer.
func (r Rule) matches(status int, reason string) bool {
	if r.Reason != "" && r.Reason != reason {
		return false
	}
	switch {
	case r.Status == 0 && r.StatusTo == 0:
		return true
	case r.StatusTo == 0:
		return status == r.Status
	}
	return status >= r.Status && status <= r.StatusTo
}

// Classify returns the first rule of table that covers the answer, or an
// AppFault rule when none does.
func Classify(table []Rule, status int, reason string) Rule {
	if i := RuleIndex(table, status, reason); i >= 0 {
		return table[i]
	}
	return Rule{Class: AppFault}
}

// RuleIndex is the index of the first rule of table that covers the
// answer, or -1; tests use it to show that every row is exercised.
func RuleIndex(table []Rule, status int, reason string) int {
	for i, r := range table {
		if r.matches(status, reason) {
			return i
		}
	}
	return -1
}

// SetClass marks e with class c (Gone, Retryable, AppFault).
func (e *Error) SetClass(c Class) *Error {
	e.Gone, e.Retryable, e.AppFault = c == DeviceGone, c == Transient, c == AppFault
	return e
}

// ClassOf returns the class of a Send error: an *Error's, Transient for a
// context error, AppFault for anything else.
func ClassOf(err error) Class {
	var e *Error
	switch {
	case errors.As(err, &e) && e.Gone:
		return DeviceGone
	case errors.As(err, &e) && e.Retryable:
		return Transient
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return Transient
	}
	return AppFault
}

// Sentinel errors matched by *Error through errors.Is.
var (
	// ErrDeviceGone means the push service says the device address is no
	// longer valid: the subscription should be removed.
	ErrDeviceGone = errors.New("device gone")
	// ErrRetryable means the same send may succeed later.
	ErrRetryable = errors.New("retryable")
	// ErrAppFault means the app's credentials or configuration are at
	// fault, not the device.
	ErrAppFault = errors.New("app fault")
)

// Error is a failed delivery, classified for the relay.
//
// An Error that is neither Gone nor Retryable is an app fault (AppFault,
// or unclassified): sending the same badge again will fail the same way
// (wrong credentials, topic, payload, ...), but the device subscription
// itself may still be valid, so the relay never reports it as gone.
type Error struct {
	// Provider is the name of the provider that failed.
	Provider string
	// Status is the push service's HTTP status, or 0 if there was no
	// response (network error, invalid input, token fetch failure).
	Status int
	// Reason is the push service's reason code (e.g. "Unregistered",
	// "UNREGISTERED", "QUOTA_EXCEEDED") or a short description.
	Reason string
	// Gone means the device address is no longer valid.
	Gone bool
	// Retryable means trying again later may succeed.
	Retryable bool
	// AppFault means the app's credentials or configuration are at fault
	// (the push service refused the provider's key, certificate, account
	// or VAPID key, or the request as configured): the device may be fine.
	AppFault bool
	// RetryAfter is how long to wait before retrying, when the push service
	// said so (Retry-After) or the protocol requires a minimum; 0 otherwise.
	RetryAfter time.Duration
	// GoneSince is, for APNs 410 responses, the last time APNs confirmed the
	// token was no longer valid: a subscription refreshed after this time has
	// a new registration and should be kept. Zero when unknown.
	GoneSince time.Time
	// Err is the underlying error, if any.
	Err error
}

// Error describes the failure, e.g. "apns: 410 Unregistered (device gone)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Provider)
	b.WriteString(":")
	if e.Status != 0 {
		b.WriteString(" ")
		b.WriteString(strconv.Itoa(e.Status))
	}
	if e.Reason != "" {
		b.WriteString(" ")
		b.WriteString(e.Reason)
	}
	if e.Err != nil {
		if e.Status != 0 || e.Reason != "" {
			b.WriteString(":")
		}
		b.WriteString(" ")
		b.WriteString(e.Err.Error())
	}
	switch {
	case e.Gone:
		b.WriteString(" (device gone)")
	case e.Retryable && e.RetryAfter > 0:
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	case e.Retryable:
		b.WriteString(" (retryable)")
	case e.AppFault:
		b.WriteString(" (app fault)")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether e matches ErrDeviceGone, ErrRetryable or ErrAppFault.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrDeviceGone:
		return e.Gone
	case ErrRetryable:
		return e.Retryable
	case ErrAppFault:
		return e.AppFault
	}
	return false
}

// IsGone reports whether err says the device address is no longer valid.
func IsGone(err error) bool { return errors.Is(err, ErrDeviceGone) }

// IsRetryable reports whether err says the send may succeed later.
func IsRetryable(err error) bool { return errors.Is(err, ErrRetryable) }

// RetryAfter returns how long the push service asked to wait before
// retrying, if err is retryable and carries such a delay.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if !errors.As(err, &e) || !e.Retryable || e.RetryAfter <= 0 {
		return 0, false
	}
	return e.RetryAfter, true
}

// ParseRetryAfter parses an HTTP Retry-After value, either delay-seconds or
// an HTTP-date (RFC 9110, section 10.2.3), relative to now. A date in the
// past gives 0. It reports false for an empty or malformed value.
func ParseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(value, 10, 32); err == nil {
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(value)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// Ref is the badge's device reference, the same the on-premises parts log
// (relayproto.DeviceRef): safe to show and log, unlike Device.
func (b Badge) Ref() string { return relayproto.DeviceRef(b.AppID, b.Device) }
