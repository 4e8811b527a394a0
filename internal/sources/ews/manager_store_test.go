package ews

import (
	"context"
	"errors"
	"maps"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

// kvBucket opens the Manager's bucket on an embedded JetStream with the
// provisioned layout, which creates it (so the two names agree).
func kvBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	conn := brokertest.Start(t)
	kv, err := conn.JS.KeyValue(context.Background(), SubscriptionBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func testState(user, id string) SubscriptionState {
	subscribed := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	return SubscriptionState{Tenant: "fabrikam.com", User: user, SubscriptionID: id, Watermark: "AQAAAOeN0NC0hgNHvU+3Bxu0kFeyqBIAAAAAAAA=",
		InboxFolderID: inboxOf(user), Subscribed: subscribed}
}

func TestSubscriptionStores(t *testing.T) {
	stores := []struct {
		name string
		make func(t *testing.T) (SubscriptionStore, func(key string, data []byte))
	}{
		{"memory", func(*testing.T) (SubscriptionStore, func(string, []byte)) {
			s := NewMemorySubscriptionStore()
			return s, s.PutRaw
		}},
		{"NATS KV", func(t *testing.T) (SubscriptionStore, func(string, []byte)) {
			kv := kvBucket(t)
			return NewKVSubscriptionStore(kv), func(key string, data []byte) {
				if _, err := kv.Put(context.Background(), key, data); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			s, putRaw := st.make(t)
			if got, err := s.List(ctx); err != nil || len(got) != 0 {
				t.Fatalf("empty store lists %v, %v", got, err)
			}
			alice, bob := SubscriptionKey("fabrikam.com", aliceAddr), SubscriptionKey("fabrikam.com", bobAddr)
			want := map[string]SubscriptionState{alice: testState(aliceAddr, "sub-a"), bob: testState(bobAddr, "sub-b")}
			heard := want[alice]
			heard.LastNotification, heard.Watermark = heard.Subscribed.Add(time.Hour), "AQAAAOeN0NC0hgNHvU+3Bxu0kFfHqBIAAAAAAAA="
			for key, state := range want {
				if err := s.Put(ctx, key, state); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Put(ctx, alice, heard); err != nil {
				t.Fatal(err)
			}
			want[alice] = heard
			if got, err := s.Get(ctx, alice); err != nil || got != heard {
				t.Fatalf("Get: %+v, %v", got, err)
			}
			if _, err := s.Get(ctx, SubscriptionKey("fabrikam.com", "nobody@fabrikam.com")); !errors.Is(err, ErrSubscriptionNotFound) {
				t.Fatalf("Get of a missing key: %v", err)
			}
			if got, err := s.List(ctx); err != nil || !maps.Equal(got, want) {
				t.Fatalf("List: %v, %v", got, err)
			}
			// Unreadable records are left out and reported.
			bad := map[string]string{
				"not JSON":         `{`,
				"no id":            `{"tenant":"fabrikam.com","user":"carol@fabrikam.com","inbox_folder_id":"i"}`,
				"no inbox":         `{"tenant":"fabrikam.com","user":"carol@fabrikam.com","subscription_id":"s"}`,
				"spaced id":        `{"tenant":"fabrikam.com","user":"carol@fabrikam.com","subscription_id":"s s","inbox_folder_id":"i"}`,
				"spaced watermark": `{"tenant":"fabrikam.com","user":"carol@fabrikam.com","subscription_id":"s","inbox_folder_id":"i","watermark":"a b"}`,
				"no user":          `{"tenant":"fabrikam.com","subscription_id":"s","inbox_folder_id":"i"}`,
			}
			for name, data := range bad {
				key := SubscriptionKey("fabrikam.com", "carol@fabrikam.com")
				putRaw(key, []byte(data))
				if got, err := s.List(ctx); !errors.Is(err, ErrBadSubscriptionRecord) || !maps.Equal(got, want) {
					t.Fatalf("List with a record %s: %v, %v", name, got, err)
				}
				if _, err := s.Get(ctx, key); !errors.Is(err, ErrBadSubscriptionRecord) {
					t.Fatalf("Get of a record %s: %v", name, err)
				}
			}
			for _, key := range []string{SubscriptionKey("fabrikam.com", "carol@fabrikam.com"), bob, bob} {
				if err := s.Delete(ctx, key); err != nil {
					t.Fatalf("Delete %s: %v", key, err)
				}
			}
			delete(want, bob)
			if got, err := s.List(ctx); err != nil || !maps.Equal(got, want) {
				t.Fatalf("List after deleting: %v, %v", got, err)
			}
		})
	}
}

func TestSubscriptionKey(t *testing.T) {
	valid := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`) // NATS KV keys
	tests := []struct {
		tenant, user string
		sameAs       int // index of a case with the same key, -1 for none
	}{
		{"fabrikam.com", "alice@fabrikam.com", -1},
		{"Fabrikam.COM.", "ALICE@fabrikam.com", 0},
		{"fabrikam.com", "bob@fabrikam.com", -1},
		{"xn--bcher-kva.example", "jörg@xn--bcher-kva.example", -1},
	}
	keys := make([]string, len(tests))
	for i, tt := range tests {
		keys[i] = SubscriptionKey(tt.tenant, tt.user)
		if !valid.MatchString(keys[i]) || len(keys[i]) > 255 {
			t.Errorf("%s %s: key %q is not a KV key", tt.tenant, tt.user, keys[i])
		}
		for j := range i {
			if same := keys[i] == keys[j]; same != (tt.sameAs == j) {
				t.Errorf("keys of cases %d and %d: %q, %q", i, j, keys[i], keys[j])
			}
		}
	}
}

// TestManagerWithKVStore restarts a Manager on the KV store: it makes
// every subscription again from its stored watermark, under the same
// keys.
func TestManagerWithKVStore(t *testing.T) {
	h := newManagerHarness(t)
	h.store = NewKVSubscriptionStore(kvBucket(t))
	h.start(nil)
	checkCalls(t, h.exchange.received(), "GetFolder "+aliceAddr, "GetFolder "+bobAddr, "Subscribe "+aliceAddr+" afresh", "Subscribe "+bobAddr+" afresh")
	before := h.stored()
	h.start(nil)
	checkCalls(t, h.exchange.received(), "Subscribe "+aliceAddr+" from "+before[aliceAddr].Watermark, "Subscribe "+bobAddr+" from "+before[bobAddr].Watermark)
	after := h.stored()
	if len(after) != 2 || after[aliceAddr].SubscriptionID == before[aliceAddr].SubscriptionID {
		t.Fatalf("stored after the restart: %v", after)
	}
}
