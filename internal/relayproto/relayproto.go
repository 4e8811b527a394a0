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

// DeviceStatus is the outcome for one device.
type DeviceStatus string

// Device outcomes. Gone and Rejected are permanent: the subscription should
// be removed (Gone) or the notification dead-lettered (Rejected). Retry
// means try again after BackOffTimeInMilliseconds.
const (
	DeviceDelivered DeviceStatus = "delivered"
	DeviceGone      DeviceStatus = "gone"
	DeviceRetry     DeviceStatus = "retry"
	DeviceRejected  DeviceStatus = "rejected"
)

// DeviceResult is the outcome for one recipient of a notification.
type DeviceResult struct {
	AppID                     string       `json:"appId"`
	DeviceID                  string       `json:"deviceId"`
	Status                    DeviceStatus `json:"status"`
	Reason                    string       `json:"reason,omitempty"`
	BackOffTimeInMilliseconds int64        `json:"BackOffTimeInMilliseconds,omitempty"`
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
