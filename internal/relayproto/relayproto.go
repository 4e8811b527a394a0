// Package relayproto is the wire format between the on-premises side
// (dispatcher, probe) and the relay. Its shape follows Exchange's on-premises
// publisher, so the field names are the ones operators know:
//
//	POST {Uri}/service.svc/PublishOnPremNotifications
//	Authorization: Bearer <S2S token>
//	client-request-id: <uuid>
//
//	{"notifications":[{"id":"...","payload":{...},"recipients":[{...}]}]}
//
// A success answers 200 with a Response that has one result per
// notification and per device; a failure of the whole request answers 4xx or
// 5xx with a Fault.
//
// # Fault classes
//
// Every per-device result carries one Class, which tells the on-premises
// side what to do (see internal/delivery):
//
//   - "delivered": the push service accepted the badge.
//   - "deviceGone": the push service says the device address is dead, and
//     its verdict is newer than the subscription (verdictAt, when the
//     service gives a time, e.g. APNs 410 "timestamp"). Remove that
//     subscription (keeping a tombstone, so that the verdict can be undone).
//   - "appFault": the app cannot send at all: a bad provider key, service
//     account or VAPID key, a provider authentication error, an appId the
//     relay does not know, or an app not bound to the caller's
//     organization. Keep every subscription; stop sending for that
//     tenant+app until a trial push succeeds.
//   - "transient": try again later (5xx, 429, timeouts, network errors);
//     BackOffTimeInMilliseconds, when set, is how long the relay asks to
//     wait. A transient result with verdictAt is a device-gone verdict the
//     relay found older than the subscription (the device registered
//     again): keep the subscription and do not resend the badge.
//
// The older "status" field (delivered, gone, retry, rejected) is still
// sent, derived from the class, for dispatchers that predate classes; it
// never says "rejected" for an app fault, so such a dispatcher does not
// remove subscriptions because of one. Readers use DeviceResult.Outcome,
// which falls back to "status" when a relay sends no class.
package relayproto

import (
	"strings"
	"time"
)

// PublishPath is appended to the proxy Uri to publish notifications.
const PublishPath = "/service.svc/PublishOnPremNotifications"

// MetadataPath is where the relay serves its auth metadata document,
// relative to the proxy Uri.
const MetadataPath = "/metadata/json/1"

// Headers of a publish request and its answer.
const (
	HeaderClientRequestID       = "client-request-id"
	HeaderReturnClientRequestID = "return-client-request-id"
)

// MonitoringAppID is the appId of the connectivity probe's notification.
const MonitoringAppID = "MonitoringProbeAppId"

// MonitoringDeviceID is the deviceId of the probe's notification: 64 zeros.
var MonitoringDeviceID = strings.Repeat("0", 64)

// BackgroundSyncEmail asks the app to sync mail in the background.
const BackgroundSyncEmail = "Email"

// MaxNotificationsPerRequest bounds a batch; the relay refuses larger ones.
const MaxNotificationsPerRequest = 500

// MaxRecipients bounds the devices of one notification.
const MaxRecipients = 100

// Request is the body of a publish request.
type Request struct {
	Notifications []Notification `json:"notifications"`
}

// Notification is one unread count for one user's devices.
type Notification struct {
	ID         string      `json:"id"`
	Payload    Payload     `json:"payload"`
	Recipients []Recipient `json:"recipients"`
}

// Payload is what the devices are told.
type Payload struct {
	// TenantID is informational; the relay takes the tenant from the token.
	TenantID           string `json:"tenantId"`
	UnseenEmailCount   int    `json:"unseenEmailCount"`
	Language           string `json:"language,omitempty"`
	BackgroundSyncType string `json:"backgroundSyncType,omitempty"`
	IsMonitoring       bool   `json:"isMonitoring"`
}

// Recipient is one device subscription.
type Recipient struct {
	AppID                  string    `json:"appId"`
	DeviceID               string    `json:"deviceId"`
	LastSubscriptionUpdate time.Time `json:"lastSubscriptionUpdate"`
	InstallationID         string    `json:"InstallationId,omitempty"`
}

// Fault is the error body of a failed request. CanRetry false means the
// same request will fail again; BackOffTimeInMilliseconds, when set, is how
// long to wait before a retry.
type Fault struct {
	Message                   string `json:"Message"`
	CanRetry                  bool   `json:"CanRetry"`
	BackOffTimeInMilliseconds int64  `json:"BackOffTimeInMilliseconds,omitempty"`
}

// MaxBackOff caps a relay's BackOffTimeInMilliseconds, as Exchange did.
const MaxBackOff = time.Hour

// BackOff is the fault's back-off as a duration, capped at MaxBackOff.
func (f Fault) BackOff() time.Duration {
	d := time.Duration(f.BackOffTimeInMilliseconds) * time.Millisecond
	if d > MaxBackOff {
		return MaxBackOff
	}
	if d < 0 {
		return 0
	}
	return d
}

// Response is the body of a successful publish: one result per notification.
type Response struct {
	Results []NotificationResult `json:"results"`
}

// NotificationResult is the outcome of one notification, device by device.
type NotificationResult struct {
	ID      string         `json:"id"`
	Devices []DeviceResult `json:"devices"`
}

// DeviceStatus is the outcome for one device in the protocol's first
// version; Class replaces it.
type DeviceStatus string

// Device statuses of the protocol's first version. A relay derives them
// from the class (see StatusOf); DeviceRejected is only read from old
// relays, and is taken as an app fault.
const (
	DeviceDelivered DeviceStatus = "delivered"
	DeviceGone      DeviceStatus = "gone"
	DeviceRetry     DeviceStatus = "retry"
	DeviceRejected  DeviceStatus = "rejected"
)

// Class is the fault class of one device's outcome; see the package
// documentation.
type Class string

// Fault classes.
const (
	// ClassDelivered: the push service accepted the badge.
	ClassDelivered Class = "delivered"
	// ClassDeviceGone: the device address is dead, by a verdict newer
	// than the subscription; remove the subscription.
	ClassDeviceGone Class = "deviceGone"
	// ClassAppFault: the app's credentials or configuration are wrong, or
	// the app is unknown or not bound to the organization; keep the
	// subscription and pause the tenant+app.
	ClassAppFault Class = "appFault"
	// ClassTransient: try again later.
	ClassTransient Class = "transient"
)

// Classes lists the fault classes.
func Classes() []Class {
	return []Class{ClassDelivered, ClassDeviceGone, ClassAppFault, ClassTransient}
}

// StatusOf is the first-version status a relay sends beside class c. An
// app fault reads as "retry", so that a dispatcher that predates classes
// never removes a subscription because of it.
func StatusOf(c Class) DeviceStatus {
	switch c {
	case ClassDelivered:
		return DeviceDelivered
	case ClassDeviceGone:
		return DeviceGone
	}
	return DeviceRetry
}

// DeviceResult is the outcome for one recipient of a notification.
type DeviceResult struct {
	AppID    string `json:"appId"`
	DeviceID string `json:"deviceId"`
	// Class is the outcome's fault class.
	Class Class `json:"class,omitempty"`
	// Status is the first-version outcome, StatusOf(Class).
	Status DeviceStatus `json:"status"`
	// Reason is the push service's answer in words (status and reason
	// code, never a device address).
	Reason string `json:"reason,omitempty"`
	// VerdictAt is, for a device-gone verdict (or one the relay judged
	// older than the subscription), when the push service says the device
	// address stopped being valid, if it says.
	VerdictAt time.Time `json:"verdictAt,omitzero"`
	// BackOffTimeInMilliseconds is, for a transient outcome, how long the
	// relay asks to wait before a retry.
	BackOffTimeInMilliseconds int64 `json:"BackOffTimeInMilliseconds,omitempty"`
}

// SetClass sets the class and the status derived from it.
func (d *DeviceResult) SetClass(c Class) {
	d.Class, d.Status = c, StatusOf(c)
}

// Outcome is the result's class; for a relay that sends none, it is read
// from the status: gone is device gone, retry transient, and rejected an
// app fault, so that no subscription is removed on a relay's refusal.
func (d DeviceResult) Outcome() Class {
	if d.Class != "" {
		return d.Class
	}
	switch d.Status {
	case DeviceDelivered:
		return ClassDelivered
	case DeviceGone:
		return ClassDeviceGone
	case DeviceRetry:
		return ClassTransient
	}
	return ClassAppFault
}

// BackOff is the result's back-off as a duration, capped at MaxBackOff.
func (d DeviceResult) BackOff() time.Duration {
	return Fault{BackOffTimeInMilliseconds: d.BackOffTimeInMilliseconds}.BackOff()
}

// IsMonitoring reports whether n is the connectivity probe's notification,
// which the relay answers without forwarding to any provider.
func (n Notification) IsMonitoring() bool {
	if !n.Payload.IsMonitoring {
		return false
	}
	for _, r := range n.Recipients {
		if r.AppID != MonitoringAppID {
			return false
		}
	}
	return true
}

// ProbeNotification is the connectivity probe's notification.
func ProbeNotification(id string, now time.Time) Notification {
	return Notification{
		ID:      id,
		Payload: Payload{TenantID: "", UnseenEmailCount: 1, IsMonitoring: true},
		Recipients: []Recipient{{
			AppID:                  MonitoringAppID,
			DeviceID:               MonitoringDeviceID,
			LastSubscriptionUpdate: now.UTC(),
		}},
	}
}
