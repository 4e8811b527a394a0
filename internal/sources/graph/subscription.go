package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"
	"unicode/utf8"
)

// Graph subscriptions on a user's inbox messages (POST /subscriptions,
// PATCH and DELETE /subscriptions/{id}).
const (
	// MaxMailSubscriptionLifetime is the longest Graph keeps a
	// subscription on Outlook messages: 10,070 minutes, under 7 days.
	MaxMailSubscriptionLifetime = 10070 * time.Minute
	// SubscriptionChangeTypes are the changes a subscription reports.
	SubscriptionChangeTypes = "created,updated,deleted"
	// ClockSkewMargin is taken off an expiration at the maximum lifetime,
	// so that a clock a little ahead of Graph's is not refused.
	ClockSkewMargin = time.Minute
	// MaxSubscriptionAnswer bounds Graph's answer about a subscription.
	MaxSubscriptionAnswer = 64 << 10
	// MaxSubscriptionID bounds a subscription id.
	MaxSubscriptionID = 128
	// graphTime is how Graph writes an expirationDateTime.
	graphTime = "2006-01-02T15:04:05.0000000Z"
)

// InboxResource is the resource of a user's subscription:
// users/{id}/mailFolders('inbox')/messages, so that notifications are
// about the inbox only (Config.DefaultMailbox).
func InboxResource(userID string) string {
	return "users/" + url.PathEscape(userID) + "/mailFolders('inbox')/messages"
}

// subscriptionRequest is the body of POST /subscriptions, and of PATCH
// with the expiration alone.
type subscriptionRequest struct {
	ChangeType               string `json:"changeType,omitempty"`
	NotificationURL          string `json:"notificationUrl,omitempty"`
	LifecycleNotificationURL string `json:"lifecycleNotificationUrl,omitempty"`
	Resource                 string `json:"resource,omitempty"`
	ExpirationDateTime       string `json:"expirationDateTime"`
	ClientState              string `json:"clientState,omitempty"`
}

// ErrMalformedSubscription matches the errors of decodeSubscription.
var ErrMalformedSubscription = errors.New("malformed Graph subscription answer")

// decodeSubscription reads Graph's answer to a create or a renewal: the
// subscription's id (required: at most MaxSubscriptionID bytes of
// printable UTF-8 without spaces) and its expiration, zero when absent or
// unreadable (the caller then keeps the one it asked for: the
// subscription exists either way). Fields Graph may add are ignored.
func decodeSubscription(body []byte) (id string, expires time.Time, err error) {
	var a struct {
		ID                 *string `json:"id"`
		ExpirationDateTime string  `json:"expirationDateTime"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&a); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %v", ErrMalformedSubscription, err)
	}
	if a.ID == nil {
		return "", time.Time{}, fmt.Errorf("%w: no id", ErrMalformedSubscription)
	}
	if err := checkSubscriptionID(*a.ID); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %v", ErrMalformedSubscription, err)
	}
	if t, err := time.Parse(time.RFC3339Nano, a.ExpirationDateTime); err == nil {
		expires = t
	}
	return *a.ID, expires, nil
}

// checkSubscriptionID says what is wrong with a subscription id, or nil.
func checkSubscriptionID(id string) error {
	switch {
	case id == "":
		return errors.New("the subscription id is empty")
	case len(id) > MaxSubscriptionID:
		return fmt.Errorf("the subscription id is longer than %d bytes", MaxSubscriptionID)
	case !utf8.ValidString(id) || !printable(id):
		return errors.New("the subscription id is not printable UTF-8")
	}
	return checkToken(id)
}
