package subscriptions_test

import (
	"context"
	"testing"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

func TestNamer(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	store, err := subscriptions.Open(ctx, conn.JS, brokertest.Keyer(t, conn))
	if err != nil {
		t.Fatal(err)
	}
	put := func(tenant, user, device, label string) {
		t.Helper()
		if _, _, err := store.Put(ctx, subscriptions.Subscription{Tenant: tenant, User: user, AppID: "demo", DeviceID: device, Platform: subscriptions.PlatformAPNS, Label: label}); err != nil {
			t.Fatal(err)
		}
	}
	put("fabrikam.com", "alice@fabrikam.com", "phone-token-of-alice", "alice's iPhone")
	put("contoso.com", "bob@contoso.com", "phone-token-of-bob", "")
	n := store.Namer()
	tests := []struct {
		tenant, ref, user, label string
	}{
		{"fabrikam.com", subscriptions.DeviceRef("demo", "phone-token-of-alice"), "alice@fabrikam.com", "alice's iPhone"},
		{"contoso.com", subscriptions.DeviceRef("demo", "phone-token-of-bob"), "bob@contoso.com", ""},
		// A device of another tenant is not named.
		{"fabrikam.com", subscriptions.DeviceRef("demo", "phone-token-of-bob"), "", ""},
		{"fabrikam.com", "demo/unknown", "", ""},
	}
	for _, tt := range tests {
		if user, label := n.Name(ctx, tt.tenant, tt.ref); user != tt.user || label != tt.label {
			t.Errorf("Name(%s, %s) = %q, %q; want %q, %q", tt.tenant, tt.ref, user, label, tt.user, tt.label)
		}
	}
}
