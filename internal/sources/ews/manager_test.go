package ews

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ntlm/ntlmtest"
	"github.com/pushproxy/pushproxy/internal/sources/manage/managetest"
)

func checkCalls(t *testing.T, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Errorf("requests\n%q\nwant\n%q", got, want)
	}
}

func checkValue(t *testing.T, what string, got, want float64) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// checkGaps compares the gap counters with want (zero for those left
// out).
func checkGaps(t *testing.T, m *Manager, want map[gapReason]float64) {
	t.Helper()
	for _, r := range []gapReason{gapSilence, gapError, gapRestart, gapWatermark} {
		checkValue(t, "gaps{"+string(r)+"}", testutil.ToFloat64(m.metrics.gaps.WithLabelValues(string(r))), want[r])
	}
}

func operations(m *Manager, op, result string) float64 {
	return testutil.ToFloat64(m.metrics.operations.WithLabelValues(op, result))
}

// checkAnswer posts body and checks the answer.
func (h *managerHarness) checkAnswer(what, body string, want Status) {
	h.t.Helper()
	if code, got := h.post(body); code != http.StatusOK || got != want {
		h.t.Errorf("%s: answered %d %q, want 200 %q", what, code, got, want)
	}
}

func TestManagerSubscribesOnePerMailbox(t *testing.T) {
	h := newManagerHarness(t)
	h.list.Set(ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr}, ManagedMailbox{Tenant: "fabrikam.com", User: bobAddr},
		ManagedMailbox{Tenant: "contoso.com", User: "carol@contoso.com"})
	m := h.newManager(func(c *ManagerConfig) { c.Tenants = []string{"Fabrikam.com."} })
	if err := m.core.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Ten seconds in, the progress line tells what is left to do.
	h.clock.Advance(ProgressInterval)
	m.core.Tend()
	if log := h.log.String(); !strings.Contains(log, `"to_subscribe":2`) || !strings.Contains(log, `"skipped_mailboxes":1`) {
		t.Errorf("no progress line in %s", log)
	}
	m.drain(t)
	now := h.clock.Now()
	checkCalls(t, h.exchange.received(), "GetFolder "+aliceAddr, "GetFolder "+bobAddr, "Subscribe "+aliceAddr+" afresh", "Subscribe "+bobAddr+" afresh")
	want := subscribeCall{mailbox: bobAddr, folder: "inbox", version: RequestServerVersion, frequency: 10, url: h.notificationURL(),
		eventTypes: []string{"NewMailEvent", "ModifiedEvent", "DeletedEvent", "MovedEvent"}}
	got := h.exchange.lastSubscribe()
	want.mailbox = got.mailbox
	if !got.equal(want) || (got.mailbox != aliceAddr && got.mailbox != bobAddr) {
		t.Errorf("Subscribe request %+v", got)
	}

	stored := h.stored()
	if len(stored) != 2 {
		t.Fatalf("%d stored, want 2", len(stored))
	}
	for _, user := range []string{aliceAddr, bobAddr} {
		st := stored[user]
		if !strings.HasPrefix(st.SubscriptionID, "sub-") || !strings.HasPrefix(st.Watermark, "wm-") || st.InboxFolderID != inboxOf(user) ||
			st.Tenant != "fabrikam.com" || !st.Subscribed.Equal(now) || !st.LastNotification.IsZero() {
			t.Errorf("stored for %s: %+v", user, st)
		}
		sub, err := m.Lookup(context.Background(), st.SubscriptionID)
		if err != nil || sub != (Subscription{Tenant: "fabrikam.com", User: user, InboxFolderID: inboxOf(user)}) {
			t.Errorf("Lookup of %s's subscription: %+v, %v", user, sub, err)
		}
	}
	if _, err := m.Lookup(context.Background(), "sub-0-nobody"); !errors.Is(err, ErrUnknownSubscription) {
		t.Errorf("Lookup of an unknown id: %v", err)
	}
	checkValue(t, "subscriptions", testutil.ToFloat64(m.metrics.subscriptions), 2)
	checkValue(t, "operations{subscribe,ok}", operations(m, opSubscribe, resultOK), 2)
	checkValue(t, "last notification age", testutil.ToFloat64(m.metrics.age), 0)
	checkGaps(t, m, nil)
	if got := h.resyncs.Got(); len(got) != 0 {
		t.Errorf("resyncs %q for first subscriptions", got)
	}
}

func TestManagerSubscribesOverNTLM(t *testing.T) {
	h := newManagerHarness(t)
	var srv *ntlmtest.Server
	h.exchange, srv = newFakeExchangeBehindNTLM(t, aliceAddr, bobAddr)
	m := h.newManager(func(c *ManagerConfig) {
		c.URL, c.Client, c.Username, c.NTLM, c.Concurrency = h.exchange.url(), h.exchange.srv.Client(), `FABRIKAM\svc-push`, true, 2
	})
	if err := m.core.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.drain(t)
	if stored := h.stored(); len(stored) != 2 {
		t.Fatalf("%d subscriptions stored, want 2 (calls %q)", len(stored), h.exchange.received())
	}
	if got := srv.Counts(); got.Basic != 0 || got.Unchallenged != 0 || got.Handshakes == 0 || got.Handshakes > 2 {
		t.Fatalf("the server saw %+v", got)
	}
}

func TestManagerWaitsWhileBusy(t *testing.T) {
	h := newManagerHarness(t)
	h.list.Set(ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr})
	h.exchange.mu.Lock()
	h.exchange.busy["GetFolder"], h.exchange.busy["Subscribe"] = 1, 1
	h.exchange.mu.Unlock()
	m := h.start(nil)
	checkCalls(t, h.exchange.received(), "GetFolder "+aliceAddr, "GetFolder "+aliceAddr, "Subscribe "+aliceAddr+" afresh", "Subscribe "+aliceAddr+" afresh")
	if got := h.clock.Slept(); !slices.Equal(got, []time.Duration{time.Second, time.Second}) {
		t.Errorf("waits %v, want the server's back-off twice", got)
	}
	if len(h.stored()) != 1 {
		t.Errorf("stored %v", h.stored())
	}
	checkValue(t, "operations{subscribe,ok}", operations(m, opSubscribe, resultOK), 1)
}

func TestManagerFollowsNotifications(t *testing.T) {
	h := newManagerHarness(t)
	m := h.start(nil)
	h.exchange.received()
	subs := h.stored()
	wmA, wmB := h.exchange.watermark(), h.exchange.watermark()
	h.clock.Advance(time.Minute)
	heard := h.clock.Now()
	h.checkAnswer("new mail", newMailNote(subs[aliceAddr].SubscriptionID, aliceAddr, wmA), StatusOK)
	h.checkAnswer("heartbeat", statusNote(subs[bobAddr].SubscriptionID, wmB), StatusOK)
	h.checkAnswer("unknown subscription", statusNote("sub-0-nobody", wmB), StatusUnsubscribe)
	evs := h.storedEvents()
	if len(evs) != 1 || evs[0].Kind != events.KindNew || evs[0].Mailbox != events.Inbox || evs[0].User != aliceAddr {
		t.Fatalf("stored events %+v", evs)
	}
	m.drain(t)
	checkCalls(t, h.exchange.received())
	stored := h.stored()
	for user, wm := range map[string]string{aliceAddr: wmA, bobAddr: wmB} {
		if st := stored[user]; st.Watermark != wm || !st.LastNotification.Equal(heard) || st.SubscriptionID != subs[user].SubscriptionID {
			t.Errorf("stored for %s: %+v, want watermark %s heard at %s", user, st, wm, heard)
		}
	}
	h.clock.Advance(3 * time.Minute)
	m.core.Tend()
	checkValue(t, "last notification age", testutil.ToFloat64(m.metrics.age), 180)
}

// TestManagerGaps: a subscription that may be gone is made again from
// its last watermark (afresh, with a resync, when Exchange refuses it);
// the old one is answered Unsubscribe, the new one OK.
func TestManagerGaps(t *testing.T) {
	tests := []struct {
		name string
		// gap makes alice's subscription gap after both were made at
		// the same time, and returns the Manager to drain.
		gap func(h *managerHarness, m *Manager, alice, bob SubscriptionState) *Manager
		// calls are the requests that follow, with the last watermarks
		// of alice's and bob's subscriptions.
		calls   func(alice, bob string) []string
		gaps    map[gapReason]float64
		resyncs []string
		// changed are the mailboxes subscribed again.
		changed []string
	}{
		{
			name: "silence",
			gap: func(h *managerHarness, m *Manager, alice, bob SubscriptionState) *Manager {
				// Alice's last notification brings a new watermark;
				// then bob's heartbeat keeps his subscription alive
				// while alice's is silent for twice the status
				// frequency and the margin.
				h.checkAnswer("alice's new mail", newMailNote(alice.SubscriptionID, aliceAddr, h.exchange.watermark()), StatusOK)
				m.drain(h.t)
				h.clock.Advance(2*testFrequency + DefaultSilenceMargin - time.Second)
				h.checkAnswer("bob's heartbeat", statusNote(bob.SubscriptionID, bob.Watermark), StatusOK)
				m.drain(h.t)
				checkCalls(h.t, h.exchange.received())
				h.clock.Advance(time.Second)
				return m
			},
			calls:   func(alice, _ string) []string { return []string{"Subscribe " + aliceAddr + " from " + alice} },
			gaps:    map[gapReason]float64{gapSilence: 1},
			changed: []string{aliceAddr},
		},
		{
			name: "error notification",
			gap: func(h *managerHarness, m *Manager, alice, _ SubscriptionState) *Manager {
				h.checkAnswer("error", errorNote(alice.SubscriptionID), StatusOK)
				return m
			},
			calls:   func(alice, _ string) []string { return []string{"Subscribe " + aliceAddr + " from " + alice} },
			gaps:    map[gapReason]float64{gapError: 1},
			changed: []string{aliceAddr},
		},
		{
			name: "restart",
			gap: func(h *managerHarness, _ *Manager, _, _ SubscriptionState) *Manager {
				m := h.newManager(nil)
				if err := m.core.Load(context.Background()); err != nil {
					h.t.Fatal(err)
				}
				return m
			},
			calls: func(alice, bob string) []string {
				return []string{"Subscribe " + aliceAddr + " from " + alice, "Subscribe " + bobAddr + " from " + bob}
			},
			gaps:    map[gapReason]float64{gapRestart: 2},
			changed: []string{aliceAddr, bobAddr},
		},
		{
			name: "refused watermark",
			gap: func(h *managerHarness, m *Manager, alice, _ SubscriptionState) *Manager {
				h.exchange.forget(alice.Watermark)
				h.checkAnswer("error", errorNote(alice.SubscriptionID), StatusOK)
				return m
			},
			calls: func(alice, _ string) []string {
				return []string{"Subscribe " + aliceAddr + " from " + alice, "Subscribe " + aliceAddr + " afresh"}
			},
			gaps:    map[gapReason]float64{gapError: 1, gapWatermark: 1},
			resyncs: []string{"fabrikam.com " + aliceAddr},
			changed: []string{aliceAddr},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newManagerHarness(t)
			m := h.start(nil)
			h.exchange.received()
			before := h.stored()
			alice, bob := before[aliceAddr], before[bobAddr]
			m = tt.gap(h, m, alice, bob)
			// What the gap left in the store: the watermarks to resume
			// from.
			before = h.stored()
			m.drain(t)
			checkCalls(t, h.exchange.received(), tt.calls(before[aliceAddr].Watermark, before[bobAddr].Watermark)...)
			checkGaps(t, m, tt.gaps)
			if got := h.resyncs.Got(); !slices.Equal(got, tt.resyncs) {
				t.Errorf("resyncs %q, want %q", got, tt.resyncs)
			}
			after := h.stored()
			if len(after) != 2 {
				t.Fatalf("%d stored, want 2", len(after))
			}
			for _, user := range []string{aliceAddr, bobAddr} {
				old, st := before[user], after[user]
				if !slices.Contains(tt.changed, user) {
					if st.SubscriptionID != old.SubscriptionID {
						t.Errorf("%s's subscription changed: %+v", user, st)
					}
					continue
				}
				wantWatermark := old.Watermark
				if tt.resyncs != nil {
					wantWatermark = h.exchange.lastSubscribe().watermark
					if wantWatermark != "" || st.Watermark == old.Watermark {
						t.Errorf("%s resubscribed afresh from %q, stored watermark %q", user, wantWatermark, st.Watermark)
					}
					wantWatermark = st.Watermark
				}
				if st.SubscriptionID == old.SubscriptionID || st.Watermark != wantWatermark || st.InboxFolderID != inboxOf(user) ||
					!st.Subscribed.Equal(h.clock.Now()) {
					t.Errorf("%s's subscription after the gap: %+v (before: %+v)", user, st, old)
				}
				h.checkAnswer(user+"'s old subscription", statusNote(old.SubscriptionID, st.Watermark), StatusUnsubscribe)
				h.checkAnswer(user+"'s new subscription", statusNote(st.SubscriptionID, st.Watermark), StatusOK)
			}
			resubscribed := float64(len(tt.changed))
			if tt.resyncs != nil {
				checkValue(t, "operations{resubscribe,invalid_watermark}", operations(m, opResubscribe, resultInvalidWatermark), 1)
				resubscribed--
			}
			checkValue(t, "operations{resubscribe,ok}", operations(m, opResubscribe, resultOK), resubscribed)
			checkValue(t, "subscriptions", testutil.ToFloat64(m.metrics.subscriptions), 2)
		})
	}
}

// TestManagerKeepsTheWatermarkSeenWhileResubscribing: a notification of
// the old subscription that comes while the new one is made leaves its
// newer watermark, which the store gets.
func TestManagerKeepsTheWatermarkSeenWhileResubscribing(t *testing.T) {
	h := newManagerHarness(t)
	h.list.Set(ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr})
	h.start(nil)
	old := h.stored()[aliceAddr]
	m := h.newManager(nil)
	if err := m.core.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.exchange.mu.Lock()
	h.exchange.hold, h.exchange.held = make(chan struct{}), make(chan string, 1)
	h.exchange.mu.Unlock()
	m.core.Dispatch(context.Background())
	<-h.exchange.held
	newer := h.exchange.watermark()
	h.checkAnswer("old subscription while resubscribing", newMailNote(old.SubscriptionID, aliceAddr, newer), StatusOK)
	close(h.exchange.hold)
	m.drain(t)
	if st := h.stored()[aliceAddr]; st.SubscriptionID == old.SubscriptionID || st.Watermark != newer {
		t.Errorf("stored %+v, want a new subscription with watermark %s", st, newer)
	}
}

// TestManagerLookupWaitsForSubscribe: Exchange may deliver the first
// notification of a subscription before the Subscribe answer is read; it
// is not answered Unsubscribe.
func TestManagerLookupWaitsForSubscribe(t *testing.T) {
	tests := []struct {
		name       string
		lookupWait time.Duration
		wantCode   int
		want       Status
	}{
		{"answered meanwhile", time.Minute, http.StatusOK, StatusOK},
		{"not answered in time", 20 * time.Millisecond, http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newManagerHarness(t)
			h.list.Set(ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr})
			m := h.newManager(func(c *ManagerConfig) { c.LookupWait = tt.lookupWait })
			if err := m.core.Load(context.Background()); err != nil {
				t.Fatal(err)
			}
			h.exchange.mu.Lock()
			h.exchange.hold, h.exchange.held = make(chan struct{}), make(chan string, 1)
			h.exchange.mu.Unlock()
			m.core.Dispatch(context.Background())
			id := <-h.exchange.held
			var (
				wg     sync.WaitGroup
				code   int
				status Status
			)
			wg.Go(func() { code, status = h.post(statusNote(id, "wm-1")) })
			if tt.want == StatusOK {
				// Release the answer once the notification waits for it.
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
					m.core.Lock()
					waiting := m.lookupWaiters
					m.core.Unlock()
					if waiting == 1 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the notification does not wait for the Subscribe answer")
					}
				}
				close(h.exchange.hold)
				wg.Wait()
			} else {
				wg.Wait()
				close(h.exchange.hold)
			}
			m.drain(t)
			if code != tt.wantCode || status != tt.want {
				t.Errorf("answered %d %q, want %d %q", code, status, tt.wantCode, tt.want)
			}
			h.checkAnswer("the next notification", statusNote(id, "wm-1"), StatusOK)
		})
	}
}

func TestManagerDropsUnlistedMailboxes(t *testing.T) {
	h := newManagerHarness(t)
	m := h.start(nil)
	h.exchange.received()
	bob := h.stored()[bobAddr]
	h.list.Set(ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr})
	m.core.Relist(context.Background())
	m.drain(t)
	checkCalls(t, h.exchange.received())
	stored := h.stored()
	if _, ok := stored[bobAddr]; ok || len(stored) != 1 {
		t.Fatalf("stored %v, want alice's only", stored)
	}
	h.checkAnswer("bob's subscription", statusNote(bob.SubscriptionID, bob.Watermark), StatusUnsubscribe)
	h.checkAnswer("alice's subscription", statusNote(stored[aliceAddr].SubscriptionID, "wm-9"), StatusOK)
	checkValue(t, "subscriptions", testutil.ToFloat64(m.metrics.subscriptions), 1)

	// Listed again, bob is subscribed afresh.
	h.list.Set(ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr}, ManagedMailbox{Tenant: "fabrikam.com", User: bobAddr})
	m.core.Relist(context.Background())
	m.drain(t)
	checkCalls(t, h.exchange.received(), "GetFolder "+bobAddr, "Subscribe "+bobAddr+" afresh")

	// A list that cannot be read changes nothing.
	h.list.Fail(errors.New("the file is gone"))
	m.core.Relist(context.Background())
	m.drain(t)
	if len(h.stored()) != 2 || !strings.Contains(h.log.String(), "keeping the subscriptions as they are") {
		t.Errorf("after a failed listing: stored %v", h.stored())
	}
}

func TestManagerRetriesFailures(t *testing.T) {
	h := newManagerHarness(t)
	h.list.Set(ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr}, ManagedMailbox{Tenant: "fabrikam.com", User: "nobody@fabrikam.com"})
	h.store = managetest.NewFlakyStore(h.store, 1)
	m := h.start(nil)
	checkCalls(t, h.exchange.received(), "GetFolder "+aliceAddr, "GetFolder nobody@fabrikam.com", "Subscribe "+aliceAddr+" afresh")
	checkValue(t, "operations{subscribe,error}", operations(m, opSubscribe, resultError), 1)
	if n := len(h.stored()); n != 0 {
		t.Fatalf("%d stored while the store fails", n)
	}
	// After the back-off the missing write is made without asking
	// Exchange again, and the missing mailbox is tried again.
	h.clock.Advance(DefaultErrorBackoff)
	m.drain(t)
	checkCalls(t, h.exchange.received(), "GetFolder nobody@fabrikam.com")
	if st := h.stored(); len(st) != 1 || st[aliceAddr].SubscriptionID == "" {
		t.Fatalf("stored %v", st)
	}
	if !strings.Contains(h.log.String(), "ErrorNonExistentMailbox") {
		t.Errorf("the failure is not logged: %s", h.log.String())
	}
}

func TestManagerRun(t *testing.T) {
	h := newManagerHarness(t)
	m := h.newManager(nil)
	if _, err := m.Lookup(context.Background(), "sub-1-alice"); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Lookup before Run: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); len(h.stored()) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Run subscribed nothing in 10 s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	before := h.stored()
	if _, err := m.Lookup(context.Background(), before[aliceAddr].SubscriptionID); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Lookup after Run returned (a lost lease): %v, want retry later", err)
	}
	// Run again, as when the lease comes back: it starts from the store and
	// subscribes every mailbox again from its watermark.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- m.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		after := h.stored()
		if after[aliceAddr].SubscriptionID != before[aliceAddr].SubscriptionID && after[bobAddr].SubscriptionID != before[bobAddr].SubscriptionID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second Run subscribed nothing again in 10 s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.list.Fail(errors.New("the file is gone"))
	if err := h.newManager(nil).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "the file is gone") {
		t.Fatalf("Run without a list: %v", err)
	}
}

func TestNewManagerChecksConfig(t *testing.T) {
	good := ManagerConfig{Mailboxes: listedMailboxes{managetest.NewList[ManagedMailbox]()}, Access: Access{URL: "https://mail.fabrikam.com/EWS/Exchange.asmx", Username: "svc", Password: "p"},
		NotificationURL: "https://push.fabrikam.com/v1/ews?key=k", Store: NewMemorySubscriptionStore()}
	tests := []struct {
		name   string
		mutate func(*ManagerConfig)
		err    string
	}{
		{"good", func(*ManagerConfig) {}, ""},
		{"a day", func(c *ManagerConfig) { c.StatusFrequency = 24 * time.Hour }, ""},
		{"no mailboxes", func(c *ManagerConfig) { c.Mailboxes = nil }, "mailbox list"},
		{"no store", func(c *ManagerConfig) { c.Store = nil }, "store"},
		{"no credentials", func(c *ManagerConfig) { c.Username = "" }, "username and password"},
		{"relative EWS URL", func(c *ManagerConfig) { c.URL = "/EWS/Exchange.asmx" }, "not an http(s) URL"},
		{"no notification URL", func(c *ManagerConfig) { c.NotificationURL = "" }, "notification URL"},
		{"seconds", func(c *ManagerConfig) { c.StatusFrequency = 90 * time.Second }, "whole number of minutes"},
		{"more than a day", func(c *ManagerConfig) { c.StatusFrequency = 1441 * time.Minute }, "from 1m to 24h"},
		{"negative rate", func(c *ManagerConfig) { c.Rate = -1 }, "negative"},
		{"bad tenant", func(c *ManagerConfig) { c.Tenants = []string{"not a domain"} }, "tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mutate(&cfg)
			_, err := NewManager(cfg)
			switch {
			case tt.err == "" && err != nil:
				t.Fatal(err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want %q", err, tt.err)
			}
		})
	}
}
