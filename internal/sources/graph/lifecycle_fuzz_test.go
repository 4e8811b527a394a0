package graph

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources/manage"
	"github.com/pushproxy/pushproxy/internal/sources/manage/managetest"
)

// fuzzSubscriptionID is the subscription the fuzzed manager knows, the
// one of the seeds.
const fuzzSubscriptionID = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"

// FuzzLifecycle feeds arbitrary bodies to ParseLifecycle and to the
// Lifecycle of a loaded Manager that knows one subscription. Seeds:
// testdata/lifecycle.json, testdata/lifecycle_removed.json and the corpus
// in testdata/fuzz/FuzzLifecycle.
func FuzzLifecycle(f *testing.F) {
	for _, name := range []string{"lifecycle.json", "lifecycle_removed.json"} {
		f.Add(readFile(f, name))
	}
	store := NewMemorySubscriptionStore()
	st := testState("alice@fabrikam.com", fuzzSubscriptionID)
	if err := store.Put(context.Background(), SubscriptionKey(st.Tenant, st.User), st); err != nil {
		f.Fatal(err)
	}
	users := listedUsers{managetest.NewList(ManagedUser{Tenant: "fabrikam.com", Address: "alice@fabrikam.com", UserRef: UserRef{ID: aliceID}})}
	var missed atomic.Int64
	m, err := NewManager(ManagerConfig{Users: users, Tokens: staticTokens("t"), NotificationURL: "https://push.example.com/v1/graph",
		ClientStates: []string{secret}, Store: store, Missed: func(context.Context, string, string) { missed.Add(1) },
		Options: manage.Options{Now: func() time.Time { return st.Created }, Log: zerolog.Nop()}})
	if err != nil {
		f.Fatal(err)
	}
	if err := m.core.Load(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		notes, perr := ParseLifecycle(body)
		for _, n := range notes {
			if n.Event == "" || checkSubscriptionID(n.SubscriptionID) != nil {
				t.Fatalf("parsed %+v", n)
			}
		}
		before := missed.Load()
		err := m.Lifecycle(context.Background(), body)
		var se *httpjson.Error
		switch {
		case err == nil:
			if perr != nil {
				t.Fatalf("Lifecycle took what ParseLifecycle refused: %v", perr)
			}
		case !errors.As(err, &se):
			t.Fatalf("error %v is not a *httpjson.Error", err)
		case se.Status != http.StatusBadRequest && se.Status != http.StatusRequestEntityTooLarge && se.Status != http.StatusUnauthorized:
			t.Fatalf("status %d", se.Status)
		}
		calls := int64(0)
		for _, n := range notes {
			if n.Event == LifecycleMissed && n.SubscriptionID == fuzzSubscriptionID && n.ClientState == secret {
				calls++
			}
		}
		if got := missed.Load() - before; got != calls {
			t.Fatalf("missed called %d times, want %d", got, calls)
		}
		m.core.Lock()
		defer m.core.Unlock()
		for e := range m.core.All() {
			if e.Extra.act != manage.None && e.Extra.sub != fuzzSubscriptionID {
				t.Fatalf("urgent %v for %s", e.Extra.act, e.Extra.sub)
			}
		}
	})
}

// FuzzSubscriptionRecords feeds arbitrary bytes to the readers of Graph's
// subscription answers and of stored records. Seeds:
// testdata/subscription_created.json, testdata/subscription_state.json
// and the corpus in testdata/fuzz/FuzzSubscriptionRecords.
func FuzzSubscriptionRecords(f *testing.F) {
	for _, name := range []string{"subscription_created.json", "subscription_state.json"} {
		f.Add(readFile(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		id, _, err := decodeSubscription(body)
		switch {
		case err != nil && (id != "" || !errors.Is(err, ErrMalformedSubscription)):
			t.Fatalf("id %q with error %v", id, err)
		case err == nil && checkSubscriptionID(id) != nil:
			t.Fatalf("took id %q", id)
		}
		st, err := stateCodec().Decode(body)
		if err != nil {
			if !errors.Is(err, ErrBadSubscriptionRecord) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if checkSubscriptionID(st.SubscriptionID) != nil || st.Tenant == "" || st.User == "" || st.Expires.IsZero() {
			t.Fatalf("took %+v", st)
		}
		data, err := stateCodec().Encode(st)
		if err != nil {
			return // a year JSON cannot write
		}
		again, err := stateCodec().Decode(data)
		if err != nil {
			t.Fatalf("a record read back fails: %v", err)
		}
		if data2, _ := stateCodec().Encode(again); string(data2) != string(data) {
			t.Fatalf("round trip %s != %s", data2, data)
		}
	})
}
