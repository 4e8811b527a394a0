package relayproto

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestRequestJSONUsesExchangeFieldNames(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	req := Request{Notifications: []Notification{{
		ID:         "n1",
		Payload:    Payload{TenantID: "t", UnseenEmailCount: 3, Language: "es-ES", BackgroundSyncType: BackgroundSyncEmail},
		Recipients: []Recipient{{AppID: "app", DeviceID: "dev", LastSubscriptionUpdate: now, InstallationID: "i"}},
	}}}
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"notifications":[{"id":"n1","payload":{"tenantId":"t","unseenEmailCount":3,"language":"es-ES","backgroundSyncType":"Email","isMonitoring":false},"recipients":[{"appId":"app","deviceId":"dev","lastSubscriptionUpdate":"2026-11-25T10:00:00Z","InstallationId":"i"}]}]}`
	if string(data) != want {
		t.Fatalf("got  %s\nwant %s", data, want)
	}
}

func TestProbeNotification(t *testing.T) {
	n := ProbeNotification("p", time.Now())
	if !n.IsMonitoring() || n.Payload.UnseenEmailCount != 1 || n.Recipients[0].DeviceID != strings.Repeat("0", 64) {
		t.Fatalf("probe notification %+v", n)
	}
	n.Recipients = append(n.Recipients, Recipient{AppID: "real-app"})
	if n.IsMonitoring() {
		t.Fatal("a monitoring payload to a real app must not count as monitoring")
	}
}

func TestFaultBackOff(t *testing.T) {
	tests := []struct {
		ms   int64
		want time.Duration
	}{{0, 0}, {1500, 1500 * time.Millisecond}, {-5, 0}, {int64(2 * time.Hour / time.Millisecond), time.Hour}}
	for _, tt := range tests {
		if got := (Fault{BackOffTimeInMilliseconds: tt.ms}).BackOff(); got != tt.want {
			t.Errorf("BackOff(%d) = %s, want %s", tt.ms, got, tt.want)
		}
	}
}

func TestDeviceResultOutcome(t *testing.T) {
	tests := []struct {
		name string
		in   DeviceResult
		want Class
	}{
		{"class wins", DeviceResult{Class: ClassAppFault, Status: DeviceGone}, ClassAppFault},
		{"old delivered", DeviceResult{Status: DeviceDelivered}, ClassDelivered},
		{"old gone", DeviceResult{Status: DeviceGone}, ClassDeviceGone},
		{"old retry", DeviceResult{Status: DeviceRetry}, ClassTransient},
		{"old rejected is an app fault, never a removal", DeviceResult{Status: DeviceRejected}, ClassAppFault},
		{"unknown status", DeviceResult{Status: "weird"}, ClassAppFault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.Outcome(); got != tt.want {
				t.Fatalf("Outcome() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSetClassDerivesStatus(t *testing.T) {
	want := map[Class]DeviceStatus{
		ClassDelivered:  DeviceDelivered,
		ClassDeviceGone: DeviceGone,
		ClassAppFault:   DeviceRetry,
		ClassTransient:  DeviceRetry,
	}
	for _, c := range Classes() {
		var d DeviceResult
		d.SetClass(c)
		if d.Class != c || d.Status != want[c] {
			t.Errorf("SetClass(%q) = %q/%q, want status %q", c, d.Class, d.Status, want[c])
		}
	}
}

func TestDeviceResultJSON(t *testing.T) {
	d := DeviceResult{AppID: "app", DeviceID: "dev", Reason: "apns: 410 Unregistered",
		VerdictAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	d.SetClass(ClassDeviceGone)
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"appId":"app","deviceId":"dev","class":"deviceGone","status":"gone","reason":"apns: 410 Unregistered","verdictAt":"2026-12-01T00:00:00Z"}`
	if string(data) != want {
		t.Fatalf("got  %s\nwant %s", data, want)
	}
}
