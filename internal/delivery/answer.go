package delivery

import (
	"time"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Push is one user's badge on its way to the relay: the notifications (one
// per language and background-sync choice, see Notifications) and what the
// records of its fate need.
type Push struct {
	// Tenant and User name the user; UserKey is its key
	// (events.Keyer.UserKey), which subscription keys start with.
	Tenant, User, UserKey string
	// Notifications are what is sent.
	Notifications []relayproto.Notification
	// Count is the unread count pushed; Exact whether it is exact;
	// Previous the count pushed before, if any.
	Count    int
	Exact    bool
	Previous *int
	// Sequences are the MAIL stream sequences of the events it covers.
	Sequences []uint64
	// FirstEventAt is when the earliest covered event happened.
	FirstEventAt time.Time
}

// Device is one recipient's outcome.
type Device struct {
	// NotificationID is the notification that addressed it.
	NotificationID string
	// Recipient is the device as addressed.
	Recipient relayproto.Recipient
	// Reason is the relay's, VerdictAt the push service's verdict time.
	Reason    string
	VerdictAt time.Time
}

// Answer is the relay's answer for one push, by fault class.
type Answer struct {
	// Delivered counts the devices that got the badge, by app.
	Delivered map[string]int
	// Gone are the devices whose subscriptions are to be removed: the
	// relay says gone, and the verdict (if timed) is newer than the
	// subscription.
	Gone []Device
	// Kept are devices reported gone by a verdict older than the
	// subscription (by the relay, as transient with a verdict time, or
	// found here): the subscription stays and the badge is not resent.
	Kept []Device
	// AppFaults are devices whose app could not send (credentials,
	// configuration, unknown or unbound app).
	AppFaults []Device
	// Transient are devices to try again; BackOff is the longest wait the
	// relay asked for among them.
	Transient []Device
	BackOff   time.Duration
	// Missing are notifications the relay's answer does not mention.
	Missing []relayproto.Notification
}

// Devices counts the recipients of every notification of p.
func (p Push) Devices() int {
	n := 0
	for _, note := range p.Notifications {
		n += len(note.Recipients)
	}
	return n
}

// DeliveredTotal is how many devices got the badge.
func (a Answer) DeliveredTotal() int {
	n := 0
	for _, c := range a.Delivered {
		n += c
	}
	return n
}

// Retry reports whether some of the push is to be sent again.
func (a Answer) Retry() bool { return len(a.Transient) > 0 || len(a.Missing) > 0 }

// Classify reads the relay's answer for p (results may hold other
// pushes' notifications too). It is pure: applying the answer is Settle's.
func Classify(p Push, results []relayproto.NotificationResult) Answer {
	byID := make(map[string]relayproto.NotificationResult, len(results))
	for _, r := range results {
		byID[r.ID] = r
	}
	var a Answer
	for _, n := range p.Notifications {
		res, ok := byID[n.ID]
		if !ok {
			a.Missing = append(a.Missing, n)
			continue
		}
		for _, d := range res.Devices {
			rc, known := recipient(n, d)
			if !known {
				continue // not one we sent: nothing to act on
			}
			dev := Device{NotificationID: n.ID, Recipient: rc, Reason: d.Reason, VerdictAt: d.VerdictAt}
			switch d.Outcome() {
			case relayproto.ClassDelivered:
				if a.Delivered == nil {
					a.Delivered = map[string]int{}
				}
				a.Delivered[rc.AppID]++
			case relayproto.ClassDeviceGone:
				if !d.VerdictAt.IsZero() && !d.VerdictAt.After(rc.LastSubscriptionUpdate) && !rc.LastSubscriptionUpdate.IsZero() {
					a.Kept = append(a.Kept, dev)
					continue
				}
				a.Gone = append(a.Gone, dev)
			case relayproto.ClassTransient:
				if !d.VerdictAt.IsZero() {
					// A device-gone verdict the relay judged older than the
					// subscription: kept, and not sent again.
					a.Kept = append(a.Kept, dev)
					continue
				}
				a.Transient = append(a.Transient, dev)
				a.BackOff = max(a.BackOff, d.BackOff())
			default:
				a.AppFaults = append(a.AppFaults, dev)
			}
		}
	}
	return a
}

// recipient finds the recipient of n a device result is about.
func recipient(n relayproto.Notification, d relayproto.DeviceResult) (relayproto.Recipient, bool) {
	for _, rc := range n.Recipients {
		if rc.AppID == d.AppID && rc.DeviceID == d.DeviceID {
			return rc, true
		}
	}
	return relayproto.Recipient{}, false
}
