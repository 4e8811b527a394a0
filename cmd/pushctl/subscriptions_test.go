package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/pushlog"
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

func TestSubscriptionsTombstonesRestore(t *testing.T) {
	conn, url := startNATS(t)
	ctx := context.Background()
	store, err := subscriptions.Open(ctx, conn.JS, brokertest.Keyer(t, conn))
	if err != nil {
		t.Fatal(err)
	}
	tombs, err := pushlog.OpenTombstones(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []subscriptions.Subscription{
		{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "com.example.mail", DeviceID: "aaaa1111", Platform: "APNS"},
		{Tenant: "fabrikam.com", User: "bob@fabrikam.com", AppID: "com.example.cal", DeviceID: "bbbb2222", Platform: "APNS"},
	} {
		saved, _, err := store.Put(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		// A device-gone verdict removed it.
		if err := tombs.Put(ctx, pushlog.Tombstone{Subscription: saved, Reason: "apns: 410 Unregistered", RemovedAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
		if err := store.DeleteKey(ctx, saved.Key); err != nil {
			t.Fatal(err)
		}
	}

	r := pushctl(t, "subscriptions", "tombstones", url)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 3 || !strings.Contains(r.stdout, "apns: 410 Unregistered") || strings.Contains(r.stdout, "aaaa1111") {
		t.Fatalf("tombstones: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := pushctl(t, "subscriptions", "tombstones", "--app-id", "com.example.cal", url); strings.Count(r.stdout, "\n") != 2 || !strings.Contains(r.stdout, "bob@fabrikam.com") {
		t.Fatalf("tombstones --app-id:\n%s", r.stdout)
	}
	oneLineError(t, pushctl(t, "subscriptions", "restore", url), 2, "--tenant is required")
	oneLineError(t, pushctl(t, "subscriptions", "restore", "--tenant", "contoso.com", url), 1, "no tombstones match")
	oneLineError(t, pushctl(t, "subscriptions", "restore", "--tenant", "not a domain", url), 2, "--tenant")

	r = pushctl(t, "subscriptions", "restore", "--user", "alice@fabrikam.com", url)
	if r.code != 0 || !strings.Contains(r.stdout, "Restored 1 subscription(s).") {
		t.Fatalf("restore --user: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if subs, err := store.List(ctx, "fabrikam.com", "alice@fabrikam.com"); err != nil || len(subs) != 1 || subs[0].DeviceID != "aaaa1111" {
		t.Fatalf("alice's subscription after restore: %+v %v", subs, err)
	}
	if left, _ := tombs.List(ctx, pushlog.TombstoneFilter{}); len(left) != 1 || left[0].Subscription.User != "bob@fabrikam.com" {
		t.Fatalf("tombstones left: %+v", left)
	}
	if r := pushctl(t, "subscriptions", "restore", "--help"); r.code != 0 || !strings.Contains(r.stdout+r.stderr, "device-gone verdict") {
		t.Fatalf("restore --help: %d %s%s", r.code, r.stdout, r.stderr)
	}
}
