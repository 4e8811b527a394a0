package subscriptions_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/compact"
	"github.com/pushproxy/pushproxy/internal/storage"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// TestStoreReadsBothEncodings: subscriptions in JSON (written by an
// earlier release, or before the switch) and compact ones sit side by
// side, and every reader reads both alike: Get, List, ListAll, Users, and
// the dispatchers' Cache through its batched direct get and its watch.
func TestStoreReadsBothEncodings(t *testing.T) {
	conn := brokertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := subscriptions.Open(ctx, conn.JS, brokertest.Keyer(t, conn))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := conn.JS.KeyValue(ctx, broker.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	store = store.WithClock(func() time.Time { return clock })
	asJSON, packed := store.WithEncoding(storage.Fixed(storage.JSON)), store.WithEncoding(storage.Fixed(storage.Compact))
	device := func(id, label string) subscriptions.Subscription {
		s := alice()
		s.DeviceID, s.Label = id, label
		return s
	}
	put := func(w *subscriptions.Store, sub subscriptions.Subscription, first byte) subscriptions.Subscription {
		t.Helper()
		got, _, err := w.Put(ctx, sub)
		if err != nil {
			t.Fatal(err)
		}
		if b := brokertest.FirstByte(t, kv, got.Key); b != first {
			t.Fatalf("%s stored as a value starting with %q, want %q", sub.DeviceID, b, first)
		}
		return got
	}
	put(asJSON, device(apnsToken, "Alice’s iPhone"), '{')
	put(packed, device("fcm-token:"+apnsToken, ""), compact.Version1)
	list, err := store.List(ctx, "fabrikam.com", "alice@fabrikam.com")
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v; want 2 devices", list, err)
	}
	for _, got := range list {
		if got.Tenant != "fabrikam.com" || got.Platform != subscriptions.PlatformAPNS || got.Language != "es-ES" || got.InboxUnreadCount != 3 ||
			!got.LastSubscriptionUpdate.Equal(clock) || got.ExpiresAt.IsZero() || got.Key == "" {
			t.Fatalf("List gives %+v", got)
		}
		one, err := store.Get(ctx, got.Key)
		if err != nil || !reflect.DeepEqual(one, got) {
			t.Fatalf("Get = %+v, %v; List gave %+v", one, err, got)
		}
	}
	all, err := store.ListAll(ctx)
	if err != nil || !reflect.DeepEqual(all, list) {
		t.Fatalf("ListAll = %+v, %v; want %+v", all, err, list)
	}
	users := 0
	if err := store.Users(ctx, "", func(tenant, user string) error {
		users++
		if tenant != "fabrikam.com" || user != "alice@fabrikam.com" {
			t.Errorf("Users gives %s %s", tenant, user)
		}
		return nil
	}); err != nil || users != 1 {
		t.Fatalf("Users: %d users, %v", users, err)
	}

	cache, err := store.Cache(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	userKey := store.UserKey("fabrikam.com", "alice@fabrikam.com")
	read, err := cache.ForUser(ctx, userKey)
	if err != nil || !reflect.DeepEqual(read, list) {
		t.Fatalf("the cache's read gives %+v, %v; List %+v", read, err, list)
	}
	// Through the watch: a third device in JSON, the first rewritten in
	// compact.
	clock = clock.Add(time.Hour)
	put(asJSON, device("third", ""), '{')
	put(packed, device(apnsToken, "Alice’s iPhone"), compact.Version1)
	waitFor(t, func() bool {
		got, err := cache.ForUser(ctx, userKey)
		if err != nil {
			t.Fatal(err)
		}
		now, err := store.List(ctx, "fabrikam.com", "alice@fabrikam.com")
		if err != nil {
			t.Fatal(err)
		}
		return len(now) == 3 && reflect.DeepEqual(got, now)
	})
}

// TestStoreWritesWhatTheSettingsSay: a store reads the storage settings
// before its first write: a new installation writes compact, and an
// operator's switch to JSON reaches a store opened after it.
func TestStoreWritesWhatTheSettingsSay(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	kv, config := brokertest.KV(t, conn.JS, broker.BucketSubscriptions), brokertest.KV(t, conn.JS, broker.BucketConfig)
	steps := []struct {
		set   storage.Encoding // "": as provisioned
		first byte
	}{
		{"", compact.Version1},
		{storage.JSON, '{'},
	}
	for i, s := range steps {
		if s.set != "" {
			if _, _, err := storage.SetEncoding(ctx, config, s.set, storage.ByOperator, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		store, err := subscriptions.Open(ctx, conn.JS, brokertest.Keyer(t, conn))
		if err != nil {
			t.Fatal(err)
		}
		sub := alice()
		sub.DeviceID = apnsToken[:10+i]
		got, _, err := store.Put(ctx, sub)
		if err != nil {
			t.Fatal(err)
		}
		if b := brokertest.FirstByte(t, kv, got.Key); b != s.first {
			t.Fatalf("step %d: a value starting with %q, want %q", i, b, s.first)
		}
	}
}
