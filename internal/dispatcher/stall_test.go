package dispatcher

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// TestSenderHoldsPushesFromBeforeAGap sends one push through the sender
// to a relay that counts requests, with the dispatcher's view of itself
// (membership.current) in each state: a push of a worker started before
// the dispatcher's last gap in its own heartbeats, or any while it does
// not hear itself, is answered "stalled" without a request, since
// another dispatcher may own its partition by now.
func TestSenderHoldsPushesFromBeforeAGap(t *testing.T) {
	tests := []struct {
		name      string
		jobEpoch  uint64
		viewEpoch uint64
		live      bool
		wantSent  bool
	}{
		{"current epoch, hears itself", 1, 1, true, true},
		{"started before a gap", 0, 1, true, false},
		{"does not hear itself", 1, 1, false, false},
		{"before a gap, and does not hear itself", 0, 1, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var requests atomic.Int32
			relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{}`))
			}))
			defer relay.Close()
			d := onePartition(t)
			d.proxyNow.Store(&proxyState{enabled: true, uri: relay.URL + "/PushNotifications"})
			d.sender.view = func() (uint64, bool) { return tt.viewEpoch, tt.live }
			answers := newQueue[result]()
			j := &job{key: "alice", epoch: tt.jobEpoch, answer: answers, notes: []relayproto.Notification{{ID: "n1",
				Payload:    relayproto.Payload{TenantID: aliceTenant, UnseenEmailCount: 3},
				Recipients: []relayproto.Recipient{{AppID: "app", DeviceID: "d1", LastSubscriptionUpdate: time.Now()}}}}}
			d.sender.send(context.Background(), []*job{j})
			got := answers.Take(0)
			if len(got) != 1 {
				t.Fatalf("%d answers, want 1", len(got))
			}
			sent := requests.Load() > 0
			if sent != tt.wantSent {
				t.Fatalf("relay requests: %d, want sent=%v", requests.Load(), tt.wantSent)
			}
			if tt.wantSent && got[0].outcome != outcomeAnswered {
				t.Fatalf("outcome %v (%s, %v), want answered", got[0].outcome, got[0].reason, got[0].err)
			}
			if !tt.wantSent && (got[0].outcome != outcomeRetry || got[0].reason != reasonStalled) {
				t.Fatalf("outcome %v (%s), want a retry for %s", got[0].outcome, got[0].reason, reasonStalled)
			}
		})
	}
}

// TestGapStartsANewEpoch has a member hear its own heartbeat after a gap
// longer than the others' timeout: a new epoch starts and the gap is
// signalled, while a heartbeat on time changes neither.
func TestGapStartsANewEpoch(t *testing.T) {
	const beat = 10 * time.Millisecond
	m := newMembership(nil, "members", "a", beat, zerolog.Nop())
	m.heardSelf()
	if epoch, live := m.current(); epoch != 0 || !live {
		t.Fatalf("on time: epoch %d, live %v; want 0, true", epoch, live)
	}
	select {
	case <-m.gaps:
		t.Fatal("a heartbeat on time signalled a gap")
	default:
	}
	m.mu.Lock()
	m.self = time.Now().Add(-(memberTimeoutBeats + 1) * beat) // stopped, or cut off from NATS
	m.mu.Unlock()
	if _, live := m.current(); live {
		t.Fatal("a member silent for longer than the timeout still counts as heard")
	}
	m.heardSelf()
	if epoch, live := m.current(); epoch != 1 || !live {
		t.Fatalf("after the gap: epoch %d, live %v; want 1, true", epoch, live)
	}
	select {
	case <-m.gaps:
	default:
		t.Fatal("the gap was not signalled")
	}
}

// TestWorkerWritesNothingWhileItMayBeCountedGone settles a user's event
// with the dispatcher's view of itself in each state: a worker started
// before the last gap, or any while the dispatcher does not hear itself
// (or the cluster does not confirm its writes), writes no state. Its
// state may rest on reads of a server cut off from the others; stored
// when the cut heals, the new owner would merge it into its own.
func TestWorkerWritesNothingWhileItMayBeCountedGone(t *testing.T) {
	tests := []struct {
		name      string
		viewEpoch uint64
		live      bool
		wantWrite bool
	}{
		{"current epoch, live", 0, true, true},
		{"started before a gap", 1, true, false},
		{"not live", 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, key, msgs := newMailFor(t, 1)
			d.sender.view = func() (uint64, bool) { return tt.viewEpoch, tt.live }
			w := d.newWorker(0, 0)
			w.startWriters(ctx)
			defer close(w.quit)
			u := w.ledger.Add(key, aliceTenant, alice)
			w.ledger.Load(u, unread.State{}, 0)
			applyHeld(t, w, u, msgs[0])
			task := &settleTask{Settle: w.ledger.NotSent(time.Now(), dueOne(t, w), "test")}
			w.settle([]*settleTask{task})
			settleAll(ctx, t, w)
			_, rev, err := d.unread.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if wrote := rev != 0; wrote != tt.wantWrite || task.ok != tt.wantWrite {
				t.Fatalf("state written: %v (rev %d), task ok %v; want %v", wrote, rev, task.ok, tt.wantWrite)
			}
		})
	}
}
