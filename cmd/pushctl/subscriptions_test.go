package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

func TestSubscriptionsListRemove(t *testing.T) {
	conn, url := startNATS(t)
	ctx := context.Background()
	store, err := subscriptions.Open(ctx, conn.JS, brokertest.Keyer(t, conn))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []subscriptions.Subscription{
		{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "com.example.mail", DeviceID: "aaaa1111", Platform: "APNS", Options: 33},
		{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "com.example.mail", DeviceID: "bbbb2222", Platform: "FCM", Options: 1},
		{Tenant: "fabrikam.com", User: "bob@fabrikam.com", AppID: "com.example.mail", DeviceID: "cccc3333", Platform: "APNS", Options: 1},
		{Tenant: "contoso.com", User: "carol@contoso.com", AppID: "com.example.mail", DeviceID: "dddd4444", Platform: "WebPush", Options: 1},
	} {
		if _, _, err := store.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	r := pushctl(t, "subscriptions", "list", url)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 5 || !strings.Contains(r.stdout, "Email, BackgroundSync") {
		t.Fatalf("list all: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, secret := range []string{"aaaa1111", "bbbb2222", "cccc3333", "dddd4444"} {
		if strings.Contains(r.stdout, secret) {
			t.Fatalf("list shows the device token %s:\n%s", secret, r.stdout)
		}
	}
	if r := pushctl(t, "subscriptions", "list", "--tenant", "contoso.com", url); strings.Count(r.stdout, "\n") != 2 || !strings.Contains(r.stdout, "carol@contoso.com") {
		t.Fatalf("list --tenant:\n%s", r.stdout)
	}
	r = pushctl(t, "subscriptions", "list", "--user", "alice@fabrikam.com", "--json", url)
	var listed []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 2 || listed[0]["deviceId"] != nil || listed[0]["key"] == "" {
		t.Fatalf("list --user --json: %v\n%s", err, r.stdout)
	}

	if r := pushctl(t, "subscriptions", "remove", "--key", listed[0]["key"].(string), url); r.code != 0 {
		t.Fatalf("remove --key: %s", r.stderr)
	}
	if r := pushctl(t, "subscriptions", "remove", "--user", "bob@fabrikam.com", "--app-id", "com.example.mail", "--device-id", "cccc3333", url); r.code != 0 {
		t.Fatalf("remove by device: %s", r.stderr)
	}
	if r := pushctl(t, "subscriptions", "remove", "--user", "carol@contoso.com", "--all", "--yes", url); r.code != 0 || !strings.Contains(r.stdout, "Removed 1") {
		t.Fatalf("remove --all: %s %s", r.stdout, r.stderr)
	}
	left, err := store.ListAll(ctx)
	if err != nil || len(left) != 1 || left[0].DeviceID != "bbbb2222" {
		t.Fatalf("left %+v %v", left, err)
	}

	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"remove", "--key", "fabrikam_com.nope.nope"}, 1, "not found"},
		{[]string{"remove"}, 2, "give --key"},
		{[]string{"remove", "--user", "bob@fabrikam.com"}, 2, "--app-id and --device-id are required"},
		{[]string{"remove", "--user", "bob@fabrikam.com", "--all"}, 2, "--yes"},
		{[]string{"list", "--user", "bob"}, 2, "give --tenant"},
	}
	for _, tt := range tests {
		r := pushctl(t, append(append([]string{"subscriptions"}, tt.args...), url)...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: %d %q, want %d with %q", tt.args, r.code, r.stderr, tt.code, tt.want)
		}
	}
}
