package ews

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pushproxy/pushproxy/internal/ntlm/ntlmtest"
)

// subscribeCall is what the fake Exchange reads from a Subscribe request.
type subscribeCall struct {
	mailbox      string // t:DistinguishedFolderId/t:Mailbox/t:EmailAddress
	folder       string // t:DistinguishedFolderId/@Id
	impersonated string // ExchangeImpersonation's PrimarySmtpAddress
	version      string // RequestServerVersion
	eventTypes   []string
	watermark    string
	frequency    int
	url          string
}

func (c subscribeCall) equal(o subscribeCall) bool {
	return c.mailbox == o.mailbox && c.folder == o.folder && c.impersonated == o.impersonated && c.version == o.version &&
		slices.Equal(c.eventTypes, o.eventTypes) && c.watermark == o.watermark && c.frequency == o.frequency && c.url == o.url
}

// fakeSubscribeEnvelope is a Subscribe request as the fake Exchange
// checks it: every element in the namespace the EWS schema puts it in.
type fakeSubscribeEnvelope struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
	Header  struct {
		Version struct {
			Version string `xml:"Version,attr"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/types RequestServerVersion"`
		Impersonation *struct {
			SMTP string `xml:"http://schemas.microsoft.com/exchange/services/2006/types ConnectingSID>PrimarySmtpAddress"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/types ExchangeImpersonation"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Header"`
	Body struct {
		Subscribe *struct {
			Push *struct {
				Folders []struct {
					ID      string `xml:"Id,attr"`
					Address string `xml:"http://schemas.microsoft.com/exchange/services/2006/types Mailbox>EmailAddress"`
				} `xml:"http://schemas.microsoft.com/exchange/services/2006/types FolderIds>DistinguishedFolderId"`
				EventTypes []string `xml:"http://schemas.microsoft.com/exchange/services/2006/types EventTypes>EventType"`
				Watermark  *string  `xml:"http://schemas.microsoft.com/exchange/services/2006/types Watermark"`
				Frequency  int      `xml:"http://schemas.microsoft.com/exchange/services/2006/types StatusFrequency"`
				URL        string   `xml:"http://schemas.microsoft.com/exchange/services/2006/types URL"`
			} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages PushSubscriptionRequest"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages Subscribe"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
}

// readSubscribeRequest reads a push Subscribe request for one folder.
func readSubscribeRequest(body []byte) (subscribeCall, error) {
	var env fakeSubscribeEnvelope
	if err := xml.NewDecoder(bytes.NewReader(body)).Decode(&env); err != nil {
		return subscribeCall{}, err
	}
	s := env.Body.Subscribe
	switch {
	case s == nil || s.Push == nil:
		return subscribeCall{}, errors.New("no m:Subscribe/m:PushSubscriptionRequest")
	case len(s.Push.Folders) != 1:
		return subscribeCall{}, fmt.Errorf("%d folder ids", len(s.Push.Folders))
	case s.Push.Watermark != nil && *s.Push.Watermark == "":
		return subscribeCall{}, errors.New("an empty t:Watermark")
	}
	p := s.Push
	c := subscribeCall{mailbox: p.Folders[0].Address, folder: p.Folders[0].ID, version: env.Header.Version.Version,
		eventTypes: p.EventTypes, frequency: p.Frequency, url: p.URL}
	if p.Watermark != nil {
		c.watermark = *p.Watermark
	}
	if env.Header.Impersonation != nil {
		c.impersonated = env.Header.Impersonation.SMTP
	}
	return c, nil
}

// fakeExchange answers Subscribe and GetFolder requests like Exchange: a
// new subscription id and watermark per Subscribe, ErrorInvalidWatermark
// for a watermark it does not have, ErrorNonExistentMailbox for a
// mailbox it does not know, and busy answers when asked to.
type fakeExchange struct {
	t   *testing.T
	srv *httptest.Server
	// authorized checks the request's credentials.
	authorized func(r *http.Request) bool

	mu sync.Mutex
	// mailboxes are the mailboxes it has.
	mailboxes map[string]bool
	// next numbers subscriptions and watermarks.
	next int
	// watermarks are those of its event tables; others are refused.
	watermarks map[string]bool
	// busy is how many more ErrorServerBusy answers an operation
	// ("Subscribe", "GetFolder") gets.
	busy map[string]int
	// calls are the requests so far, e.g. "GetFolder alice@fabrikam.com"
	// or "Subscribe alice@fabrikam.com from wm-3".
	calls      []string
	subscribes []subscribeCall
	// hold, when set, holds the answers to Subscribe requests until it
	// is closed; held receives the new subscription's id first.
	hold chan struct{}
	held chan string
}

// newFakeExchange starts a fakeExchange with mailboxes that takes the
// Basic credentials of svc-push@fabrikam.com.
func newFakeExchange(t *testing.T, mailboxes ...string) *fakeExchange {
	f := newFakeExchangeState(t, mailboxes)
	f.srv, f.authorized = startWithBasic(t, http.HandlerFunc(f.serve))
	return f
}

// newFakeExchangeBehindNTLM starts a fakeExchange with mailboxes behind
// startBehindNTLM.
func newFakeExchangeBehindNTLM(t *testing.T, mailboxes ...string) (*fakeExchange, *ntlmtest.Server) {
	f := newFakeExchangeState(t, mailboxes)
	srv, authorized := startBehindNTLM(t, http.HandlerFunc(f.serve))
	f.srv, f.authorized = srv.Server, authorized
	return f, srv
}

func newFakeExchangeState(t *testing.T, mailboxes []string) *fakeExchange {
	f := &fakeExchange{t: t, mailboxes: map[string]bool{}, watermarks: map[string]bool{}, busy: map[string]int{}}
	for _, m := range mailboxes {
		f.mailboxes[m] = true
	}
	return f
}

func (f *fakeExchange) url() string { return f.srv.URL + "/EWS/Exchange.asmx" }

// inboxOf is the Inbox folder id the fake gives a mailbox.
func inboxOf(user string) string {
	local, _, _ := strings.Cut(user, "@")
	return "AAMkInbox-" + local + "="
}

// watermark makes a watermark of the mailboxes' event tables, as the
// event of a notification would carry.
func (f *fakeExchange) watermark() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.newWatermark()
}

// newWatermark is watermark with mu held.
func (f *fakeExchange) newWatermark() string {
	f.next++
	wm := fmt.Sprintf("wm-%d", f.next)
	f.watermarks[wm] = true
	return wm
}

// forget drops a watermark from the event tables, as 30 days do.
func (f *fakeExchange) forget(wm string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.watermarks, wm)
}

func (f *fakeExchange) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", ContentType)
	if !f.authorized(r) {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(r.Body)
	switch r.Header.Get("SOAPAction") {
	case `"` + GetFolderAction + `"`:
		f.getFolder(w, body)
	case `"` + SubscribeAction + `"`:
		f.subscribe(w, body)
	default:
		f.t.Errorf("SOAPAction %q", r.Header.Get("SOAPAction"))
		w.WriteHeader(http.StatusBadRequest)
	}
}

func (f *fakeExchange) getFolder(w http.ResponseWriter, body []byte) {
	call, err := readGetFolderRequest(body)
	if err != nil {
		f.t.Errorf("GetFolder request: %v\n%s", err, body)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "GetFolder "+call.mailbox)
	switch {
	case f.busy["GetFolder"] > 0:
		f.busy["GetFolder"]--
		writeMessage(w, "Error", "ErrorServerBusy", "The server cannot service this request right now.", `<t:Value Name="BackOffMilliseconds">1000</t:Value>`, "")
	case call.folder != "inbox" || !f.mailboxes[call.mailbox]:
		writeMessage(w, "Error", "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.", "", "")
	default:
		writeMessage(w, "Success", "NoError", "", "", `<t:Folder><t:FolderId Id="`+inboxOf(call.mailbox)+`" ChangeKey="AQAAAA=="/><t:UnreadCount>0</t:UnreadCount></t:Folder>`)
	}
}

func (f *fakeExchange) subscribe(w http.ResponseWriter, body []byte) {
	call, err := readSubscribeRequest(body)
	if err != nil {
		f.t.Errorf("Subscribe request: %v\n%s", err, body)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	f.mu.Lock()
	from := "afresh"
	if call.watermark != "" {
		from = "from " + call.watermark
	}
	f.calls = append(f.calls, "Subscribe "+call.mailbox+" "+from)
	f.subscribes = append(f.subscribes, call)
	var answer string
	id := ""
	switch {
	case f.busy["Subscribe"] > 0:
		f.busy["Subscribe"]--
		answer = subscribeMessage("Error", "ErrorServerBusy", `<m:MessageXml><t:Value Name="BackOffMilliseconds">1000</t:Value></m:MessageXml>`)
	case !f.mailboxes[call.mailbox]:
		answer = subscribeMessage("Error", "ErrorNonExistentMailbox", "")
	case call.watermark != "" && !f.watermarks[call.watermark]:
		answer = subscribeMessage("Error", CodeInvalidWatermark, "")
	default:
		f.next++
		local, _, _ := strings.Cut(call.mailbox, "@")
		id = fmt.Sprintf("sub-%d-%s", f.next, local)
		wm := call.watermark
		if wm == "" {
			wm = f.newWatermark()
		}
		answer = subscribeMessage("Success", "NoError", `<m:SubscriptionId>`+id+`</m:SubscriptionId><m:Watermark>`+wm+`</m:Watermark>`)
	}
	hold, held := f.hold, f.held
	f.mu.Unlock()
	if hold != nil && id != "" {
		held <- id
		<-hold
	}
	_, _ = io.WriteString(w, answer)
}

// subscribeMessage is a SubscribeResponse with one message.
func subscribeMessage(class, code, inner string) string {
	return `<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="` + SOAPNamespace + `"><s:Body>` +
		`<m:SubscribeResponse xmlns:m="` + MessagesNamespace + `" xmlns:t="` + TypesNamespace + `"><m:ResponseMessages>` +
		`<m:SubscribeResponseMessage ResponseClass="` + class + `"><m:ResponseCode>` + code + `</m:ResponseCode>` + inner +
		`</m:SubscribeResponseMessage></m:ResponseMessages></m:SubscribeResponse></s:Body></s:Envelope>`
}

// received returns the requests since the last call, sorted (the
// Manager's order among mailboxes is not the test's business).
func (f *fakeExchange) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Sorted(slices.Values(f.calls))
	f.calls = nil
	if out == nil {
		out = []string{}
	}
	return out
}

// lastSubscribe is the last Subscribe request.
func (f *fakeExchange) lastSubscribe() subscribeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subscribes) == 0 {
		return subscribeCall{}
	}
	return f.subscribes[len(f.subscribes)-1]
}
