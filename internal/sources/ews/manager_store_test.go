package ews

import (
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/manage/managetest"
)

func testState(user, id string) SubscriptionState {
	subscribed := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	return SubscriptionState{Tenant: "fabrikam.com", User: user, SubscriptionID: id, Watermark: "AQAAAOeN0NC0hgNHvU+3Bxu0kFeyqBIAAAAAAAA=",
		InboxFolderID: inboxOf(user), Subscribed: subscribed}
}

func TestSubscriptionStores(t *testing.T) {
	heard := testState(aliceAddr, "sub-a")
	heard.LastNotification, heard.Watermark = heard.Subscribed.Add(time.Hour), "AQAAAOeN0NC0hgNHvU+3Bxu0kFfHqBIAAAAAAAA="
	managetest.CheckStores(t, NewMemorySubscriptionStore, NewKVSubscriptionStore, SubscriptionBucket, managetest.StoreSteps[SubscriptionState]{
		NotFound: ErrSubscriptionNotFound, Bad: ErrBadSubscriptionRecord,
		First: testState(aliceAddr, "sub-a"), Second: testState(bobAddr, "sub-b"), Changed: heard,
		Key:     func(st SubscriptionState) string { return SubscriptionKey(st.Tenant, st.User) },
		Missing: SubscriptionKey("fabrikam.com", "nobody@fabrikam.com"), BadKey: SubscriptionKey("fabrikam.com", "carol@fabrikam.com"),
		Unreadable: map[string]string{
			"not JSON":         `{`,
			"no id":            `{"tenant":"fabrikam.com","user":"carol@fabrikam.com","inbox_folder_id":"i"}`,
			"no inbox":         `{"tenant":"fabrikam.com","user":"carol@fabrikam.com","subscription_id":"s"}`,
			"spaced id":        `{"tenant":"fabrikam.com","user":"carol@fabrikam.com","subscription_id":"s s","inbox_folder_id":"i"}`,
			"spaced watermark": `{"tenant":"fabrikam.com","user":"carol@fabrikam.com","subscription_id":"s","inbox_folder_id":"i","watermark":"a b"}`,
			"no user":          `{"tenant":"fabrikam.com","subscription_id":"s","inbox_folder_id":"i"}`,
		},
	})
}

// TestManagerWithKVStore restarts a Manager on the KV store: it makes
// every subscription again from its stored watermark, under the same
// keys.
func TestManagerWithKVStore(t *testing.T) {
	h := newManagerHarness(t)
	h.store = NewKVSubscriptionStore(managetest.KVBucket(t, SubscriptionBucket))
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
