package deadletter_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/deadletter"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/relayproto/relayprototest"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

// newRelay is a relay that takes the token "good" only.
func newRelay(t *testing.T) *relayprototest.Relay {
	return relayprototest.NewRelay(t, func(w http.ResponseWriter, req *http.Request) bool {
		if req.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			return false
		}
		return true
	})
}

type fixture struct {
	conn  *broker.Conn
	keyer *events.Keyer
	ctx   context.Context
}

func (f fixture) deadLetter(t *testing.T, tenant, user, reason string, count int, seqs ...uint64) pushlog.DeadLetter {
	t.Helper()
	key := f.keyer.UserKey(tenant, user)
	dl := pushlog.DeadLetter{Tenant: tenant, User: user, UserKey: key, Reason: reason, Attempts: 3,
		LastError: "relay answered 503", Sequences: seqs, DeadAt: time.Now().UTC(),
		Notification: relayproto.Notification{ID: "n-" + user, Payload: relayproto.Payload{TenantID: tenant, UnseenEmailCount: count},
			Recipients: []relayproto.Recipient{{AppID: "com.example.mail", DeviceID: "dev-" + user}}}}
	data, _ := json.Marshal(dl)
	if _, err := f.conn.JS.Publish(f.ctx, pushlog.DeadSubject(key), data); err != nil {
		t.Fatal(err)
	}
	return dl
}

func (f fixture) deadCount(t *testing.T) uint64 {
	t.Helper()
	s, err := f.conn.JS.Stream(f.ctx, broker.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func newFixture(t *testing.T) fixture {
	conn := brokertest.Start(t)
	return fixture{conn: conn, keyer: brokertest.Keyer(t, conn), ctx: context.Background()}
}

func TestListFilters(t *testing.T) {
	f := newFixture(t)
	f.deadLetter(t, "fabrikam.com", "alice@fabrikam.com", pushlog.ReasonExhausted, 3, 1, 2)
	f.deadLetter(t, "fabrikam.com", "bob@fabrikam.com", pushlog.ReasonRejected, 1, 3)
	mid := time.Now()
	time.Sleep(10 * time.Millisecond)
	f.deadLetter(t, "fabrikam.com", "alice@fabrikam.com", pushlog.ReasonPermanent, 4, 4)
	f.deadLetter(t, "contoso.com", "carol@contoso.com", pushlog.ReasonExhausted, 2, 5)
	if _, err := f.conn.JS.Publish(f.ctx, broker.SubjectDead+".contoso_com.junk", []byte("not json")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		filter deadletter.Filter
		want   []uint64
	}{
		{"all", deadletter.Filter{}, []uint64{1, 2, 3, 4, 5}},
		{"tenant", deadletter.Filter{Tenant: "fabrikam.com"}, []uint64{1, 2, 3}},
		{"user", deadletter.Filter{Tenant: "fabrikam.com", User: "ALICE@fabrikam.com"}, []uint64{1, 3}},
		{"reason", deadletter.Filter{Reason: "exhausted"}, []uint64{1, 4}},
		{"since", deadletter.Filter{Since: mid}, []uint64{3, 4, 5}},
		{"until", deadletter.Filter{Until: mid}, []uint64{1, 2}},
		{"seqs", deadletter.Filter{Seqs: []uint64{4, 2}, Tenant: "contoso.com"}, []uint64{4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := deadletter.List(f.ctx, f.conn.JS, f.keyer, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, l := range got {
				seqs = append(seqs, l.Seq)
			}
			if len(seqs) != len(tt.want) {
				t.Fatalf("got %v, want %v", seqs, tt.want)
			}
			for i := range seqs {
				if seqs[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", seqs, tt.want)
				}
			}
		})
	}

	l, err := deadletter.Get(f.ctx, f.conn.JS, 5)
	if err != nil || l.Invalid == "" {
		t.Fatalf("undecodable letter: %+v %v", l, err)
	}
	if _, err := deadletter.Get(f.ctx, f.conn.JS, 99); !errors.Is(err, deadletter.ErrNotFound) {
		t.Fatalf("Get(99): %v", err)
	}
	if err := deadletter.Delete(f.ctx, f.conn.JS, 5); err != nil {
		t.Fatal(err)
	}
	if err := deadletter.Delete(f.ctx, f.conn.JS, 5); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if n := f.deadCount(t); n != 4 {
		t.Fatalf("%d letters left, want 4", n)
	}
}

func TestRedrive(t *testing.T) {
	f := newFixture(t)
	rl := newRelay(t)
	store, err := settings.Open(f.ctx, f.conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	states, err := unread.Open(f.ctx, f.conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	subs, err := subscriptions.Open(f.ctx, f.conn.JS, f.keyer)
	if err != nil {
		t.Fatal(err)
	}
	r := &deadletter.Redriver{JS: f.conn.JS, Settings: store, Unread: states, Subscriptions: subs,
		Relay: relayclient.New(relayclient.Config{Tokens: staticToken("good"), BreakerFailures: -1})}

	f.deadLetter(t, "fabrikam.com", "alice@fabrikam.com", pushlog.ReasonExhausted, 3, 7, 8)
	letters, err := deadletter.List(f.ctx, f.conn.JS, f.keyer, deadletter.Filter{})
	if err != nil || len(letters) != 1 {
		t.Fatalf("list: %v %v", letters, err)
	}
	if _, err := r.Redrive(f.ctx, letters); !errors.Is(err, deadletter.ErrProxyDisabled) {
		t.Fatalf("redrive with the proxy disabled: %v", err)
	}
	if _, _, err := store.EnableProxy(f.ctx, "fabrikam.com", rl.URI()); err != nil {
		t.Fatal(err)
	}
	// The user's state moved on since: the redrive sends the current count.
	key := f.keyer.UserKey("fabrikam.com", "alice@fabrikam.com")
	if _, err := states.Put(f.ctx, key, unread.State{Count: 5, Exact: true, LastSeq: 9}, 0); err != nil {
		t.Fatal(err)
	}

	out, err := r.Redrive(f.ctx, letters)
	if err != nil || len(out) != 1 {
		t.Fatalf("redrive: %v %v", out, err)
	}
	o := out[0]
	if o.Err != nil || !o.Deleted || o.Delivered != 1 || o.Count != 5 || !o.Refreshed {
		t.Fatalf("outcome %+v", o)
	}
	got := rl.Notifications()
	if len(got) != 1 || got[0].Payload.UnseenEmailCount != 5 || got[0].Recipients[0].DeviceID != "dev-alice@fabrikam.com" {
		t.Fatalf("the relay got %+v, want the notification once with the current count", got)
	}
	if n := f.deadCount(t); n != 0 {
		t.Fatalf("%d dead letters left", n)
	}
	st, _, err := states.Get(f.ctx, key)
	if err != nil || st.LastPushedCount == nil || *st.LastPushedCount != 5 {
		t.Fatalf("state after redrive %+v %v", st, err)
	}
	sent, err := f.conn.JS.Stream(f.ctx, broker.StreamSent)
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := sent.GetLastMsgForSubject(f.ctx, pushlog.SentSubject(key)); err != nil || msg == nil {
		t.Fatalf("no PUSH_SENT record: %v", err)
	}

	// A device the relay rejects keeps its letter; a gone one loses its
	// subscription and the letter.
	rl.SetStatus(func(rc relayproto.Recipient) relayproto.DeviceStatus {
		if rc.DeviceID == "dev-bob@fabrikam.com" {
			return relayproto.DeviceRejected
		}
		return relayproto.DeviceGone
	})
	if _, _, err := subs.Put(f.ctx, subscriptions.Subscription{Tenant: "fabrikam.com", User: "carol@fabrikam.com",
		AppID: "com.example.mail", DeviceID: "dev-carol@fabrikam.com", Platform: "APNS"}); err != nil {
		t.Fatal(err)
	}
	f.deadLetter(t, "fabrikam.com", "bob@fabrikam.com", pushlog.ReasonRejected, 1, 10)
	f.deadLetter(t, "fabrikam.com", "carol@fabrikam.com", pushlog.ReasonExhausted, 1, 11)
	letters, _ = deadletter.List(f.ctx, f.conn.JS, f.keyer, deadletter.Filter{})
	out, err = r.Redrive(f.ctx, letters)
	if err != nil || len(out) != 2 {
		t.Fatalf("redrive: %v %v", out, err)
	}
	if out[0].Deleted || out[0].Rejected != 1 || out[0].Err == nil {
		t.Errorf("rejected device: %+v", out[0])
	}
	if !out[1].Deleted || out[1].Gone != 1 {
		t.Errorf("gone device: %+v", out[1])
	}
	if left, _ := subs.List(f.ctx, "fabrikam.com", "carol@fabrikam.com"); len(left) != 0 {
		t.Errorf("the gone device's subscription is still there: %+v", left)
	}
	if n := f.deadCount(t); n != 1 {
		t.Fatalf("%d dead letters left, want the rejected one", n)
	}

	// The verdict on carol's device was wrong: a redrive restores her
	// subscription from its tombstone and delivers.
	tombs, err := pushlog.OpenTombstones(f.ctx, f.conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if ts, err := tombs.List(f.ctx, pushlog.TombstoneFilter{Tenant: "fabrikam.com"}); err != nil || len(ts) != 1 || ts[0].Subscription.DeviceID != "dev-carol@fabrikam.com" {
		t.Fatalf("tombstones %+v %v, want carol's", ts, err)
	}
	rl.SetStatus(relayprototest.Delivered)
	f.deadLetter(t, "fabrikam.com", "carol@fabrikam.com", pushlog.ReasonExhausted, 2, 12)
	letters, _ = deadletter.List(f.ctx, f.conn.JS, f.keyer, deadletter.Filter{User: "carol@fabrikam.com", Tenant: "fabrikam.com"})
	out, err = r.Redrive(f.ctx, letters)
	if err != nil || len(out) != 1 || !out[0].Deleted || out[0].Restored != 1 || out[0].Delivered != 1 {
		t.Fatalf("redrive after a wrong verdict: %+v %v", out, err)
	}
	if left, _ := subs.List(f.ctx, "fabrikam.com", "carol@fabrikam.com"); len(left) != 1 {
		t.Fatalf("carol's subscription was not restored: %+v", left)
	}
	if ts, _ := tombs.List(f.ctx, pushlog.TombstoneFilter{}); len(ts) != 0 {
		t.Fatalf("tombstones left after the restore: %+v", ts)
	}
}
