package graph

import (
	"time"
)

// MaxLifecycleBody bounds a lifecycle notification delivery, in bytes.
const MaxLifecycleBody = 1 << 20

// LifecycleNotification is a lifecycle notification as delivered, its
// clientState not yet checked.
type LifecycleNotification struct {
	Lifecycle
	ClientState string
}

// ParseLifecycle reads a lifecycle notification delivery, the
// changeNotificationCollection Graph posts to the lifecycleNotificationUrl:
//
//	{"value":[{"subscriptionId":"...","subscriptionExpirationDateTime":"...",
//	  "tenantId":"<guid>","clientState":"<secret>","lifecycleEvent":"reauthorizationRequired"}]}
//
// A body that is not such a collection is a request-level error, as for
// Decode (*httpjson.Error, 400 or 413). Notifications without a
// lifecycleEvent (changes sent to the wrong URL) and those without a
// usable subscription id are left out; the event is returned as given
// (LifecycleReauthorizationRequired, LifecycleSubscriptionRemoved,
// LifecycleMissed, or one Graph may add).
func ParseLifecycle(body []byte) ([]LifecycleNotification, error) {
	c, err := Decode(body, 0)
	if err != nil {
		return nil, err
	}
	var out []LifecycleNotification
	for i := range c.Value {
		n := &c.Value[i]
		if n.LifecycleEvent == "" || checkSubscriptionID(n.SubscriptionID) != nil {
			continue
		}
		l := LifecycleNotification{
			Lifecycle:   Lifecycle{Event: n.LifecycleEvent, SubscriptionID: n.SubscriptionID, TenantID: n.TenantID},
			ClientState: n.ClientState,
		}
		if t, err := time.Parse(time.RFC3339Nano, n.SubscriptionExpirationDateTime); err == nil {
			l.Expires = t
		}
		out = append(out, l)
	}
	return out, nil
}
