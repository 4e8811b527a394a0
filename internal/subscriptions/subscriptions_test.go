package subscriptions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

func openStore(t *testing.T) *subscriptions.Store {
	t.Helper()
	conn := brokertest.Start(t)
	store, err := subscriptions.Open(context.Background(), conn.JS, brokertest.Keyer(t, conn))
	if err != nil {
		t.Fatal(err)
	}
	return store
}

func alice() subscriptions.Subscription {
	return subscriptions.Subscription{
		Tenant: "Fabrikam.com", User: "alice@fabrikam.com", AppID: "com.example.mail",
		DeviceID: "a1b2c3", Platform: "apns", Options: subscriptions.OptionEmail | subscriptions.OptionBackgroundSync,
		InboxUnreadCount: 3, Language: "es-ES",
	}
}

func TestPutRefreshListDelete(t *testing.T) {
	store := openStore(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	store = store.WithClock(func() time.Time { return clock })

	got, created, err := store.Put(ctx, alice())
	if err != nil || !created {
		t.Fatalf("Put = %v, created %v", err, created)
	}
	if got.Tenant != "fabrikam.com" || got.Platform != subscriptions.PlatformAPNS || !got.LastSubscriptionUpdate.Equal(now) {
		t.Fatalf("stored %+v: want a normalized tenant and platform and the refresh time", got)
	}
	if got.ExpiresAt.Sub(now) != store.TTL() || store.TTL() != 72*time.Hour {
		t.Fatalf("expires at %v with TTL %v, want 72h after the refresh", got.ExpiresAt, store.TTL())
	}

	clock = now.Add(time.Hour)
	again, created, err := store.Put(ctx, alice())
	if err != nil || created {
		t.Fatalf("second Put = %v, created %v; want a refresh", err, created)
	}
	if !again.LastSubscriptionUpdate.Equal(clock) || again.Key != got.Key {
		t.Fatalf("refresh %+v: want the same key and a new refresh time", again)
	}

	bob := alice()
	bob.User, bob.DeviceID = "bob@fabrikam.com", "d4"
	other := alice()
	other.DeviceID = "second-device"
	for _, s := range []subscriptions.Subscription{bob, other} {
		if _, _, err := store.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	list, err := store.List(ctx, "fabrikam.com", "Alice@Fabrikam.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].DeviceID != "a1b2c3" || list[1].DeviceID != "second-device" {
		t.Fatalf("List(alice) = %+v, want her two devices", list)
	}
	all, err := store.ListAll(ctx)
	if err != nil || len(all) != 3 {
		t.Fatalf("ListAll = %d, %v; want 3", len(all), err)
	}

	if err := store.Delete(ctx, "fabrikam.com", "alice@fabrikam.com", "com.example.mail", "a1b2c3"); err != nil {
		t.Fatal(err)
	}
	err = store.Delete(ctx, "fabrikam.com", "alice@fabrikam.com", "com.example.mail", "a1b2c3")
	if !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	list, _ = store.List(ctx, "fabrikam.com", "alice@fabrikam.com")
	if len(list) != 1 {
		t.Fatalf("after Delete List = %+v", list)
	}
}

func TestValidation(t *testing.T) {
	store := openStore(t)
	tests := []struct {
		field  string
		change func(*subscriptions.Subscription)
	}{
		{"tenant", func(s *subscriptions.Subscription) { s.Tenant = "" }},
		{"tenant", func(s *subscriptions.Subscription) { s.Tenant = "not a domain" }},
		{"user", func(s *subscriptions.Subscription) { s.User = "" }},
		{"appId", func(s *subscriptions.Subscription) { s.AppID = "" }},
		{"deviceId", func(s *subscriptions.Subscription) { s.DeviceID = "" }},
		{"deviceId", func(s *subscriptions.Subscription) { s.DeviceID = strings.Repeat("x", subscriptions.MaxDeviceIDLen+1) }},
		{"platform", func(s *subscriptions.Subscription) { s.Platform = "pager" }},
		{"options", func(s *subscriptions.Subscription) { s.Options = 64 }},
		{"inboxUnreadCount", func(s *subscriptions.Subscription) { s.InboxUnreadCount = -1 }},
		{"language", func(s *subscriptions.Subscription) { s.Language = "español!" }},
		{"installationId", func(s *subscriptions.Subscription) { s.InstallationID = "a\nb" }},
		{"label", func(s *subscriptions.Subscription) { s.Label = "alice's\tiPhone" }},
		{"label", func(s *subscriptions.Subscription) { s.Label = strings.Repeat("x", subscriptions.MaxLabelLen+1) }},
		{"label", func(s *subscriptions.Subscription) { s.Label = "bad \xff byte" }},
	}
	for _, tt := range tests {
		s := alice()
		tt.change(&s)
		_, _, err := store.Put(context.Background(), s)
		var sve *subscriptions.ValidationError
		var eve *events.ValidationError
		field := ""
		switch {
		case errors.As(err, &sve):
			field = sve.Field
		case errors.As(err, &eve):
			field = eve.Field
		}
		if field != tt.field {
			t.Errorf("%s: Put error %v names field %q", tt.field, err, field)
		}
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		in   string
		want subscriptions.Options
		ok   bool
	}{
		{`33`, 33, true},
		{`"Email, BackgroundSync"`, 33, true},
		{`"None"`, 0, true},
		{`["Email","Calendar"]`, 3, true},
		{`"Email, Pager"`, 0, false},
		{`{}`, 0, false},
	}
	for _, tt := range tests {
		var o subscriptions.Options
		err := json.Unmarshal([]byte(tt.in), &o)
		if (err == nil) != tt.ok || (tt.ok && o != tt.want) {
			t.Errorf("Unmarshal(%s) = %d, %v; want %d ok=%v", tt.in, o, err, tt.want, tt.ok)
		}
	}
	if s := (subscriptions.OptionEmail | subscriptions.OptionBackgroundSync).String(); s != "Email, BackgroundSync" {
		t.Errorf("String = %q", s)
	}
}

func TestCacheFollowsTheBucket(t *testing.T) {
	store := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, _, err := store.Put(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	cache, err := store.Cache(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	user := store.UserKey("fabrikam.com", "alice@fabrikam.com")
	forUser := func() []subscriptions.Subscription {
		t.Helper()
		subs, err := cache.ForUser(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return subs
	}
	if got := forUser(); len(got) != 1 || got[0].DeviceID != "a1b2c3" {
		t.Fatalf("ForUser after a read = %+v", got)
	}
	other := alice()
	other.DeviceID = "second"
	if _, _, err := store.Put(ctx, other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(forUser()) == 2 })
	if err := store.Delete(ctx, "fabrikam.com", "alice@fabrikam.com", "com.example.mail", "second"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(forUser()) == 1 })
	gone := forUser()[0]
	cache.Forget(gone.Key)
	if n := len(forUser()); n != 0 {
		t.Fatalf("after Forget: %d subscriptions", n)
	}
	if subs, users := cache.Len(); subs != 0 || users != 1 {
		t.Fatalf("Len after Forget = %d subscriptions, %d users; want 0, 1", subs, users)
	}
	// The device registers again: a newer revision brings it back.
	if _, _, err := store.Put(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(forUser()) == 1 })
}

func TestCacheLeavesOutExpired(t *testing.T) {
	store := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clock := time.Now()
	store = store.WithClock(func() time.Time { return clock })
	if _, _, err := store.Put(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	cache, err := store.Cache(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	user := store.UserKey("fabrikam.com", "alice@fabrikam.com")
	if got, err := cache.ForUser(ctx, user); err != nil || len(got) != 1 {
		t.Fatalf("ForUser = %+v, %v; want the subscription", got, err)
	}
	clock = clock.Add(store.TTL() + time.Minute)
	if got, err := cache.ForUser(ctx, user); err != nil || len(got) != 0 {
		t.Fatalf("expired subscription still listed: %+v, %v", got, err)
	}
}

// TestCacheIsBounded: the cache holds at most its limit of users, drops
// the least recently used, and reads a dropped user afresh, changes made
// while it was not held included.
func TestCacheIsBounded(t *testing.T) {
	store := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const users, limit = 150, 40
	sub := func(i int) subscriptions.Subscription {
		s := alice()
		s.User = fmt.Sprintf("user%d@fabrikam.com", i)
		return s
	}
	keys := make([]string, users)
	for i := range users {
		if _, _, err := store.Put(ctx, sub(i)); err != nil {
			t.Fatal(err)
		}
		keys[i] = store.UserKey("fabrikam.com", sub(i).User)
	}
	cache, err := store.Cache(ctx, limit)
	if err != nil {
		t.Fatal(err)
	}
	// More users than one read asks for, and than the cache holds.
	cache.Prefetch(keys)
	for i, k := range keys {
		got, err := cache.ForUser(ctx, k)
		if err != nil || len(got) != 1 || got[0].User != sub(i).User {
			t.Fatalf("ForUser(user%d) = %+v, %v", i, got, err)
		}
	}
	// Users whose read is in flight are kept beyond the limit; once the
	// reads end, the limit holds.
	if s, u := cache.Len(); u > limit || s != u {
		t.Fatalf("the cache holds %d subscriptions of %d users; limit %d", s, u, limit)
	}
	// user0 was dropped long ago; a device it gains meanwhile is read.
	second := sub(0)
	second.DeviceID = "second"
	if _, _, err := store.Put(ctx, second); err != nil {
		t.Fatal(err)
	}
	if got, err := cache.ForUser(ctx, keys[0]); err != nil || len(got) != 2 {
		t.Fatalf("ForUser(user0) after it was dropped = %+v, %v; want 2 devices", got, err)
	}
}

// TestCacheReadsWhatTheBucketHolds: a user read afresh has the devices
// the bucket holds now (a deleted one left out), also when a batch of
// users has more entries than the server answers at once.
func TestCacheReadsWhatTheBucketHolds(t *testing.T) {
	store := openStore(t).WithLimits(subscriptions.Limits{PerUser: 40})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const users, devices = 40, 40 // 32 users a read: 1,280 entries, over 1,024
	keys := make([]string, users)
	for i := range users {
		for d := range devices {
			s := alice()
			s.User, s.DeviceID = fmt.Sprintf("user%d@fabrikam.com", i), fmt.Sprintf("device%d", d)
			if _, _, err := store.Put(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		keys[i] = store.UserKey("fabrikam.com", fmt.Sprintf("user%d@fabrikam.com", i))
	}
	if err := store.Delete(ctx, "fabrikam.com", "user0@fabrikam.com", alice().AppID, "device0"); err != nil {
		t.Fatal(err)
	}
	cache, err := store.Cache(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	cache.Prefetch(keys)
	for i, k := range keys {
		want := devices
		if i == 0 {
			want--
		}
		if got, err := cache.ForUser(ctx, k); err != nil || len(got) != want {
			t.Fatalf("ForUser(user%d) = %d subscriptions, %v; want %d", i, len(got), err, want)
		}
	}
}

func TestCacheEndsWithItsContext(t *testing.T) {
	store := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cache, err := store.Cache(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := cache.ForUser(context.Background(), store.UserKey("fabrikam.com", "alice@fabrikam.com")); !errors.Is(err, context.Canceled) {
		t.Fatalf("ForUser after the cache's context ended = %v; want context.Canceled", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHTTP(t *testing.T) {
	store := openStore(t)
	srv := httptest.NewServer(subscriptions.Handler(store, zerolog.Nop(), subscriptions.APIOptions{}))
	defer srv.Close()
	url := srv.URL + "/v1/subscriptions"

	do := func(method, target, ctype, body string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, target, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res, out
	}
	errField := func(body map[string]any) string {
		e, _ := body["error"].(map[string]any)
		f, _ := e["field"].(string)
		return f
	}

	sub := `{"tenant":"fabrikam.com","user":"alice@fabrikam.com","appId":"com.example.mail","deviceId":"tok1","platform":"FCM","options":"Email, BackgroundSync","inboxUnreadCount":2,"language":"en-GB"}`
	if res, body := do("POST", url, "application/json", sub); res.StatusCode != 201 || body["deviceId"] != "tok1" || body["expiresAt"] == nil {
		t.Fatalf("subscribe: %d %v", res.StatusCode, body)
	}
	if res, _ := do("POST", url, "application/json; charset=utf-8", sub); res.StatusCode != 200 {
		t.Fatalf("refresh: %d, want 200", res.StatusCode)
	}
	tests := []struct {
		name, method, ctype, body string
		status                    int
		field                     string
	}{
		{"not JSON", "POST", "text/plain", sub, 415, ""},
		{"malformed", "POST", "application/json", `{"tenant":`, 400, ""},
		{"too large", "POST", "application/json", `{"deviceId":"` + strings.Repeat("x", subscriptions.MaxBodySize) + `"}`, 413, ""},
		{"wrong type", "POST", "application/json", `{"inboxUnreadCount":"three"}`, 422, "inboxUnreadCount"},
		{"bad option", "POST", "application/json", strings.Replace(sub, `"Email, BackgroundSync"`, `"Pager"`, 1), 422, "options"},
		{"missing device", "POST", "application/json", strings.Replace(sub, `"tok1"`, `""`, 1), 422, "deviceId"},
		{"unknown platform", "POST", "application/json", strings.Replace(sub, `"FCM"`, `"pager"`, 1), 422, "platform"},
		{"unknown field", "POST", "application/json", strings.Replace(sub, `"language"`, `"lang":"x","language"`, 1), 422, "lang"},
		{"client-set key", "POST", "application/json", strings.Replace(sub, `"language"`, `"key":"fabrikam_com.x","language"`, 1), 422, "key"},
		{"client-set expiry", "POST", "application/json", strings.Replace(sub, `"language"`, `"expiresAt":"2099-01-01T00:00:00Z","language"`, 1), 422, "expiresAt"},
		{"empty user", "POST", "application/json", strings.Replace(sub, `"alice@fabrikam.com"`, `""`, 1), 422, "user"},
		{"invalid UTF-8 device", "POST", "application/json", strings.Replace(sub, `"tok1"`, "\"tok\xff\"", 1), 422, "deviceId"},
		{"two values", "POST", "application/json", sub + sub, 400, ""},
	}
	for _, tt := range tests {
		res, body := do(tt.method, url, tt.ctype, tt.body)
		if res.StatusCode != tt.status || errField(body) != tt.field {
			t.Errorf("%s: %d field %q (%v), want %d field %q", tt.name, res.StatusCode, errField(body), body, tt.status, tt.field)
		}
	}

	res, body := do("GET", url+"?tenant=fabrikam.com&user=alice@fabrikam.com", "", "")
	list, _ := body["subscriptions"].([]any)
	if res.StatusCode != 200 || len(list) != 1 {
		t.Fatalf("list: %d %v", res.StatusCode, body)
	}
	// Device tokens are secrets: masked unless asked for (and allowed).
	if dev := list[0].(map[string]any)["deviceId"]; dev != subscriptions.MaskDevice("tok1") || strings.Contains(dev.(string), "tok1") {
		t.Fatalf("list shows device %v, want it masked", dev)
	}
	_, body = do("GET", url+"?tenant=fabrikam.com&user=alice@fabrikam.com&reveal=true", "", "")
	if dev := body["subscriptions"].([]any)[0].(map[string]any)["deviceId"]; dev != "tok1" {
		t.Fatalf("list with reveal shows device %v, want tok1", dev)
	}
	if res, body := do("GET", url+"?tenant=fabrikam.com", "", ""); res.StatusCode != 422 || errField(body) != "user" {
		t.Fatalf("list without user: %d %v", res.StatusCode, body)
	}

	if res, _ := do("DELETE", url+"?tenant=fabrikam.com&user=alice@fabrikam.com&appId=com.example.mail&deviceId=nope", "", ""); res.StatusCode != 404 {
		t.Fatalf("delete unknown: %d, want 404", res.StatusCode)
	}
	ref := `{"tenant":"fabrikam.com","user":"alice@fabrikam.com","appId":"com.example.mail","deviceId":"tok1"}`
	if res, _ := do("DELETE", url, "application/json", ref); res.StatusCode != 204 {
		t.Fatalf("delete: %d, want 204", res.StatusCode)
	}
	if _, body := do("GET", url+"?tenant=fabrikam.com&user=alice@fabrikam.com", "", ""); len(body["subscriptions"].([]any)) != 0 {
		t.Fatalf("after delete: %v", body)
	}
}

// TestDevicesPerUserAreBounded subscribes a user's devices up to the limit:
// one more is refused, a refresh of a known one still works.
func TestDevicesPerUserAreBounded(t *testing.T) {
	store := openStore(t).WithMaxPerUser(2)
	ctx := context.Background()
	sub := func(dev string) subscriptions.Subscription {
		return subscriptions.Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "app", DeviceID: dev, Platform: subscriptions.PlatformAPNS}
	}
	for _, dev := range []string{"d1", "d2", "d1"} {
		if _, _, err := store.Put(ctx, sub(dev)); err != nil {
			t.Fatalf("put %s: %v", dev, err)
		}
	}
	if _, _, err := store.Put(ctx, sub("d3")); !errors.Is(err, subscriptions.ErrTooMany) {
		t.Fatalf("a third device: %v, want ErrTooMany", err)
	}
	// A deleted device leaves a deletion marker in the bucket, which
	// does not count.
	if err := store.Delete(ctx, "fabrikam.com", "alice@fabrikam.com", "app", "d1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Put(ctx, sub("d3")); err != nil {
		t.Fatalf("a third device after a deletion: %v", err)
	}
}

// TestReadWithoutAnAnswerFails lists a user's devices when the batched
// read gets no answer (its time has run out, as it would when the server
// does not answer): an error, not a user without devices, which would
// leave the user's phones without their badge.
func TestReadWithoutAnAnswerFails(t *testing.T) {
	store := openStore(t)
	if _, _, err := store.Put(context.Background(), alice()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	list, err := store.List(ctx, alice().Tenant, alice().User)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("List without an answer = %d subscriptions, %v; want an error", len(list), err)
	}
}

// TestListReadsEveryDevice lists a user with more devices than one
// batched read answers (no limit per user): List and a Cache read them
// all.
func TestListReadsEveryDevice(t *testing.T) {
	store := openStore(t).WithMaxPerUser(0)
	ctx := context.Background()
	const devices = 1100 // one answer holds 1,024 entries
	for d := range devices {
		s := alice()
		s.DeviceID = fmt.Sprintf("device%d", d)
		if _, _, err := store.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	list, err := store.List(ctx, alice().Tenant, alice().User)
	if err != nil || len(list) != devices {
		t.Fatalf("List = %d subscriptions, %v; want %d", len(list), err, devices)
	}
	cache, err := store.Cache(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cache.ForUser(ctx, store.UserKey("fabrikam.com", alice().User))
	if err != nil || len(got) != devices {
		t.Fatalf("ForUser = %d subscriptions, %v; want %d", len(got), err, devices)
	}
}

// TestDevicesPerTenantAreBounded fills a tenant up to its limit with
// several users: a new device of any of its users is refused, a refresh is
// not, another tenant is not affected, and a deletion makes room at once.
func TestDevicesPerTenantAreBounded(t *testing.T) {
	store := openStore(t).WithLimits(subscriptions.Limits{PerUser: 20, PerTenant: 3})
	ctx := context.Background()
	sub := func(tenant, user, dev string) subscriptions.Subscription {
		return subscriptions.Subscription{Tenant: tenant, User: user + "@" + tenant, AppID: "app", DeviceID: dev, Platform: subscriptions.PlatformAPNS}
	}
	steps := []struct {
		name    string
		sub     subscriptions.Subscription
		delete  bool
		refused bool
	}{
		{name: "first", sub: sub("fabrikam.com", "alice", "d1")},
		{name: "second user", sub: sub("fabrikam.com", "bob", "d2")},
		{name: "third", sub: sub("fabrikam.com", "bob", "d3")},
		{name: "one more", sub: sub("fabrikam.com", "carol", "d4"), refused: true},
		{name: "refresh at the limit", sub: sub("fabrikam.com", "alice", "d1")},
		{name: "other tenant", sub: sub("contoso.com", "dave", "d5")},
		{name: "delete one", sub: sub("fabrikam.com", "bob", "d3"), delete: true},
		{name: "room again", sub: sub("fabrikam.com", "carol", "d4")},
		{name: "full again", sub: sub("fabrikam.com", "carol", "d6"), refused: true},
	}
	for _, st := range steps {
		if st.delete {
			if err := store.Delete(ctx, st.sub.Tenant, st.sub.User, st.sub.AppID, st.sub.DeviceID); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			continue
		}
		_, _, err := store.Put(ctx, st.sub)
		if st.refused != errors.Is(err, subscriptions.ErrTooMany) || (!st.refused && err != nil) {
			t.Fatalf("%s: %v, want refused=%v", st.name, err, st.refused)
		}
		if st.refused && !strings.Contains(err.Error(), "tenant fabrikam.com") {
			t.Fatalf("%s: %q does not name the tenant", st.name, err)
		}
	}
}

// TestTenantIsCountedOnceAtATime registers new devices of one tenant at
// once, before its first count and when its count is stale, and counts
// the listings of the tenant's keys (each an ordered consumer the server
// creates): one at a time, not one per device. The others wait for the
// first count, or take the stale one meanwhile.
func TestTenantIsCountedOnceAtATime(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	listings, err := conn.NC.SubscribeSync("$JS.API.CONSUMER.CREATE.KV_" + broker.BucketSubscriptions + ".>")
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC).UnixNano())
	store, err := subscriptions.Open(ctx, conn.JS, brokertest.Keyer(t, conn))
	if err != nil {
		t.Fatal(err)
	}
	store = store.WithLimits(subscriptions.Limits{PerTenant: 1000}).WithClock(func() time.Time { return time.Unix(0, clock.Load()) })
	const burst = 16
	device := 0
	for _, round := range []string{"first count", "stale count"} {
		var wg sync.WaitGroup
		errs := make(chan error, burst)
		for range burst {
			device++
			sub := subscriptions.Subscription{Tenant: "fabrikam.com", User: fmt.Sprintf("u%d@fabrikam.com", device), AppID: "app", DeviceID: fmt.Sprintf("d%d", device), Platform: subscriptions.PlatformAPNS}
			wg.Go(func() {
				if _, _, err := store.Put(ctx, sub); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s: %v", round, err)
		}
		if err := conn.NC.Flush(); err != nil {
			t.Fatal(err)
		}
		if n, _, err := listings.Pending(); err != nil || n != 1 {
			t.Fatalf("%s: %d listings of the tenant's keys (%v), want 1", round, n, err)
		}
		for {
			if _, err := listings.NextMsg(0); err != nil {
				break
			}
		}
		clock.Add(int64(2 * time.Minute))
	}
}
