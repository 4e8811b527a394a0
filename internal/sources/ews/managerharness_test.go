package ews

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources/manage/managetest"
)

// managerKey is the key of the test endpoint's URL.
const managerKey = "k3y-of-the-endpoint"

// testFrequency is the status frequency of the manager tests.
const testFrequency = 10 * time.Minute

// The mailboxes of the manager tests.
const (
	aliceAddr = "alice@fabrikam.com"
	bobAddr   = "bob@fabrikam.com"
)

// listedMailboxes is a MailboxLister whose mailboxes a test changes.
type listedMailboxes struct {
	*managetest.List[ManagedMailbox]
}

func (l listedMailboxes) ListMailboxes(ctx context.Context) ([]ManagedMailbox, error) {
	return l.Users(ctx)
}

// managerHarness runs Managers against a fake Exchange, with the EWS
// Source behind an HTTP endpoint as ingest mounts it (Parse, then
// Respond once the events are "stored"), whose registry, Observe and
// OnSubscriptionError are the current Manager's.
type managerHarness struct {
	t        *testing.T
	clock    *managetest.Clock
	exchange *fakeExchange
	store    SubscriptionStore
	list     listedMailboxes
	resyncs  *managetest.Calls
	log      *managetest.Log
	notify   *httptest.Server
	managers *managetest.Managers[ManagerConfig, *Manager]

	mu     sync.Mutex
	events []events.Event
}

func newManagerHarness(t *testing.T) *managerHarness {
	h := &managerHarness{t: t, clock: managetest.NewClock(), exchange: newFakeExchange(t, aliceAddr, bobAddr), store: NewMemorySubscriptionStore(),
		list: listedMailboxes{managetest.NewList[ManagedMailbox]()}, resyncs: &managetest.Calls{}, log: &managetest.Log{}}
	h.list.Set(ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr}, ManagedMailbox{Tenant: "fabrikam.com", User: bobAddr})
	h.managers = managetest.NewManagers(t, h.config, NewManager)
	src, err := NewSource(Config{Subscriptions: h, Key: managerKey, Observe: h.observe, OnSubscriptionError: h.subscriptionError,
		Now: h.clock.Now, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h.notify = httptest.NewServer(src.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !src.Authenticate(r) {
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "wrong key"})
			return
		}
		body, _ := io.ReadAll(r.Body)
		items, err := src.Parse(r, body)
		if err != nil {
			var se *httpjson.Error
			if !errors.As(err, &se) {
				se = &httpjson.Error{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
			}
			httpjson.WriteError(w, se)
			return
		}
		h.mu.Lock()
		for _, it := range items {
			h.events = append(h.events, it.Event)
		}
		h.mu.Unlock()
		src.Respond(w, r)
	})))
	t.Cleanup(h.notify.Close)
	return h
}

// manager is the Manager made last.
func (h *managerHarness) manager() *Manager { return h.managers.Current() }

// Lookup makes the harness the source's registry: the current Manager.
func (h *managerHarness) Lookup(ctx context.Context, id string) (Subscription, error) {
	m := h.manager()
	if m == nil {
		return Subscription{}, errors.New("no manager")
	}
	return m.Lookup(ctx, id)
}

func (h *managerHarness) observe(ctx context.Context, id, watermark string, at time.Time) {
	if m := h.manager(); m != nil {
		m.Observe(ctx, id, watermark, at)
	}
}

func (h *managerHarness) subscriptionError(ctx context.Context, e SubscriptionError) {
	if m := h.manager(); m != nil {
		m.OnSubscriptionError(ctx, e)
	}
}

func (h *managerHarness) notificationURL() string { return h.notify.URL + "/v1/ews?key=" + managerKey }

// config is the configuration of the harness's Managers: one request at
// a time, Basic credentials, the test's clock, no rate limit to speak of.
func (h *managerHarness) config() ManagerConfig {
	return ManagerConfig{
		Mailboxes: h.list, Access: Access{URL: h.exchange.url(), Username: "svc-push@fabrikam.com", Password: "pa55word"},
		NotificationURL: h.notificationURL(), StatusFrequency: testFrequency, Store: h.store, Resync: h.resyncs.Record,
		Options: managetest.Options(h.exchange.srv.Client(), h.clock, h.log),
	}
}

// newManager makes a Manager (the source's from now on) without loading
// it.
func (h *managerHarness) newManager(mutate func(*ManagerConfig)) *Manager {
	h.t.Helper()
	return h.managers.New(mutate)
}

// start makes a Manager, loads it and does what is due.
func (h *managerHarness) start(mutate func(*ManagerConfig)) *Manager {
	h.t.Helper()
	m := h.managers.New(mutate)
	managetest.Load(h.t, m.core)
	return m
}

// drain does what is due now, as Run would, until nothing is left.
func (m *Manager) drain(t testing.TB) {
	t.Helper()
	managetest.Drain(t, m.core)
}

// post sends a SendNotification request to the source as Exchange does
// and returns the HTTP status and the SubscriptionStatus of the answer
// ("" when it is a fault).
func (h *managerHarness) post(body string) (int, Status) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.notificationURL(), strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("SOAPAction", SOAPAction)
	resp, err := h.notify.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, s := range []Status{StatusOK, StatusUnsubscribe} {
		if strings.Contains(string(data), "<SubscriptionStatus>"+string(s)+"</SubscriptionStatus>") {
			return resp.StatusCode, s
		}
	}
	return resp.StatusCode, ""
}

// stored returns the store's states by user address, checking their
// keys.
func (h *managerHarness) stored() map[string]SubscriptionState {
	h.t.Helper()
	return managetest.ByUser(h.t, h.store, func(st SubscriptionState) (string, string) { return st.Tenant, st.User })
}

// storedEvents returns the events the source stored so far.
func (h *managerHarness) storedEvents() []events.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

// statusNote is a notification of subscription sub with a StatusEvent at
// watermark wm.
func statusNote(sub, wm string) string {
	return noteEnvelope(sub, `<t:StatusEvent><t:Watermark>`+wm+`</t:Watermark></t:StatusEvent>`)
}

// newMailNote is a notification of subscription sub with a NewMailEvent
// in the Inbox of user at watermark wm.
func newMailNote(sub, user, wm string) string {
	return noteEnvelope(sub, `<t:NewMailEvent><t:Watermark>`+wm+`</t:Watermark><t:TimeStamp>2030-06-01T12:00:00Z</t:TimeStamp>`+
		`<t:ItemId Id="item-`+wm+`" ChangeKey="CQAAAA=="/><t:ParentFolderId Id="`+inboxOf(user)+`" ChangeKey="AQAAAA=="/></t:NewMailEvent>`)
}

func noteEnvelope(sub, events string) string {
	return envelope(`<m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>` +
		`<m:Notification><t:SubscriptionId>` + sub + `</t:SubscriptionId><t:PreviousWatermark>wm-0</t:PreviousWatermark>` +
		`<t:MoreEvents>false</t:MoreEvents>` + events + `</m:Notification></m:SendNotificationResponseMessage>`)
}

// errorNote is a notification reporting ErrorReadEventsFailed for
// subscription sub.
func errorNote(sub string) string {
	return envelope(`<m:SendNotificationResponseMessage ResponseClass="Error"><m:MessageText>Events couldn't be read for this subscription.</m:MessageText>` +
		`<m:ResponseCode>ErrorReadEventsFailed</m:ResponseCode><m:MessageXml><t:Value Name="SubscriptionId">` + sub + `</t:Value></m:MessageXml>` +
		`</m:SendNotificationResponseMessage>`)
}
