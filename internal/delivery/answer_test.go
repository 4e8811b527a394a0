package delivery

import (
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

func TestClassify(t *testing.T) {
	subscribed := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rc := relayproto.Recipient{AppID: "app", DeviceID: "dev", LastSubscriptionUpdate: subscribed}
	p := Push{Notifications: []relayproto.Notification{{ID: "n", Recipients: []relayproto.Recipient{rc}}}}
	answer := func(class relayproto.Class, status relayproto.DeviceStatus, verdict time.Time, backOff int64) []relayproto.NotificationResult {
		return []relayproto.NotificationResult{{ID: "n", Devices: []relayproto.DeviceResult{{
			AppID: "app", DeviceID: "dev", Class: class, Status: status, VerdictAt: verdict, BackOffTimeInMilliseconds: backOff}}}}
	}
	tests := []struct {
		name    string
		results []relayproto.NotificationResult
		want    string
	}{
		{"delivered", answer(relayproto.ClassDelivered, "", time.Time{}, 0), "delivered"},
		{"gone without a time", answer(relayproto.ClassDeviceGone, "", time.Time{}, 0), "gone"},
		{"gone after the subscription", answer(relayproto.ClassDeviceGone, "", subscribed.Add(time.Second), 0), "gone"},
		{"gone before the subscription", answer(relayproto.ClassDeviceGone, "", subscribed.Add(-time.Hour), 0), "kept"},
		{"relay judged the verdict stale", answer(relayproto.ClassTransient, "", subscribed.Add(-time.Hour), 0), "kept"},
		{"app fault", answer(relayproto.ClassAppFault, "", time.Time{}, 0), "appFault"},
		{"transient", answer(relayproto.ClassTransient, "", time.Time{}, 1500), "transient"},
		{"old relay: rejected is an app fault", answer("", relayproto.DeviceRejected, time.Time{}, 0), "appFault"},
		{"old relay: gone", answer("", relayproto.DeviceGone, time.Time{}, 0), "gone"},
		{"no answer for the notification", nil, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Classify(p, tt.results)
			got := map[string]int{"delivered": a.DeliveredTotal(), "gone": len(a.Gone), "kept": len(a.Kept),
				"appFault": len(a.AppFaults), "transient": len(a.Transient), "missing": len(a.Missing)}
			for k, n := range got {
				if want := map[bool]int{true: 1}[k == tt.want]; n != want {
					t.Errorf("%s = %d, want %d (answer %+v)", k, n, want, a)
				}
			}
			if tt.want == "transient" && a.BackOff != 1500*time.Millisecond {
				t.Errorf("BackOff = %s", a.BackOff)
			}
		})
	}
}
