package ews

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/ntlm/ntlmtest"
)

// getFolderCall is what the fake server reads from a GetFolder request.
type getFolderCall struct {
	mailbox      string // t:Mailbox/t:EmailAddress
	folder       string // t:DistinguishedFolderId/@Id
	impersonated string // ExchangeImpersonation's PrimarySmtpAddress
	version      string // RequestServerVersion
}

// The request as the fake server checks it: every element in the
// namespace the EWS schema puts it in.
type fakeEnvelope struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
	Header  struct {
		Version struct {
			Version string `xml:"Version,attr"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/types RequestServerVersion"`
		Impersonation *struct {
			SID struct {
				SMTP string `xml:"http://schemas.microsoft.com/exchange/services/2006/types PrimarySmtpAddress"`
			} `xml:"http://schemas.microsoft.com/exchange/services/2006/types ConnectingSID"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/types ExchangeImpersonation"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Header"`
	Body struct {
		GetFolder *struct {
			Shape struct {
				Base       string `xml:"http://schemas.microsoft.com/exchange/services/2006/types BaseShape"`
				Additional struct {
					FieldURIs []struct {
						URI string `xml:"FieldURI,attr"`
					} `xml:"http://schemas.microsoft.com/exchange/services/2006/types FieldURI"`
				} `xml:"http://schemas.microsoft.com/exchange/services/2006/types AdditionalProperties"`
			} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages FolderShape"`
			IDs struct {
				Distinguished []struct {
					ID      string `xml:"Id,attr"`
					Mailbox struct {
						Address string `xml:"http://schemas.microsoft.com/exchange/services/2006/types EmailAddress"`
					} `xml:"http://schemas.microsoft.com/exchange/services/2006/types Mailbox"`
				} `xml:"http://schemas.microsoft.com/exchange/services/2006/types DistinguishedFolderId"`
			} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages FolderIds"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages GetFolder"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
}

// readGetFolderRequest reads a GetFolder request for the unread count of
// one distinguished folder.
func readGetFolderRequest(body []byte) (getFolderCall, error) {
	var env fakeEnvelope
	if err := xml.NewDecoder(bytes.NewReader(body)).Decode(&env); err != nil {
		return getFolderCall{}, err
	}
	g := env.Body.GetFolder
	switch {
	case g == nil:
		return getFolderCall{}, errors.New("no m:GetFolder")
	case g.Shape.Base != "IdOnly" || len(g.Shape.Additional.FieldURIs) != 1 || g.Shape.Additional.FieldURIs[0].URI != "folder:UnreadCount":
		return getFolderCall{}, fmt.Errorf("folder shape %+v", g.Shape)
	case len(g.IDs.Distinguished) != 1:
		return getFolderCall{}, fmt.Errorf("%d folder ids", len(g.IDs.Distinguished))
	}
	c := getFolderCall{mailbox: g.IDs.Distinguished[0].Mailbox.Address, folder: g.IDs.Distinguished[0].ID, version: env.Header.Version.Version}
	if env.Header.Impersonation != nil {
		c.impersonated = env.Header.Impersonation.SID.SMTP
	}
	return c, nil
}

// fakeEWS answers GetFolder requests like Exchange: per mailbox a count,
// busy answers before it, ErrorNonExistentMailbox for an unknown mailbox
// and ErrorAccessDenied for a denied one.
type fakeEWS struct {
	t   *testing.T
	srv *httptest.Server

	mu sync.Mutex
	// authorized checks the Authorization header.
	authorized func(r *http.Request) bool
	unread     map[string]int
	denied     map[string]bool
	// busy is how many more busy answers a mailbox gets; busyAs is how:
	// "fault" (HTTP 500 SOAP fault), "message" (a response message),
	// "503" (a bare HTTP 503) or "429" (a bare 429 with Retry-After 3).
	busy    map[string]int
	busyAs  string
	backOff int // BackOffMilliseconds of busy answers (0: none)
	calls   []getFolderCall
	// inflight counts requests being answered; maxInflight the most at
	// once. gate, when set, is called with inflight as a request arrives.
	inflight, maxInflight int
	gate                  func(inflight int)
}

// newFakeEWS starts a fakeEWS that takes the Basic credentials of
// svc-push@fabrikam.com.
func newFakeEWS(t *testing.T) *fakeEWS {
	f := newFakeEWSState(t)
	f.srv, f.authorized = startWithBasic(t, http.HandlerFunc(f.serve))
	return f
}

// startWithBasic starts h and returns the check of a request's Basic
// credentials: those of svc-push@fabrikam.com.
func startWithBasic(t *testing.T, h http.Handler) (*httptest.Server, func(*http.Request) bool) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, func(r *http.Request) bool {
		user, pass, ok := r.BasicAuth()
		return ok && user == "svc-push@fabrikam.com" && pass == "pa55word"
	}
}

// newFakeEWSBehindNTLM starts a fakeEWS behind startBehindNTLM.
func newFakeEWSBehindNTLM(t *testing.T) (*fakeEWS, *ntlmtest.Server) {
	f := newFakeEWSState(t)
	srv, authorized := startBehindNTLM(t, http.HandlerFunc(f.serve))
	f.srv, f.authorized = srv.Server, authorized
	return f, srv
}

// startBehindNTLM starts h behind a server that demands NTLM of
// FABRIKAM\svc-push, like IIS with only Windows authentication. It
// returns the server and the check that a request came through it.
func startBehindNTLM(t *testing.T, h http.Handler) (*ntlmtest.Server, func(*http.Request) bool) {
	srv := ntlmtest.NewServer(t, map[string]string{`FABRIKAM\svc-push`: "pa55word"}, h)
	return srv, func(r *http.Request) bool { return r.Header.Get("X-Authenticated-User") != "" }
}

func newFakeEWSState(t *testing.T) *fakeEWS {
	return &fakeEWS{t: t, unread: map[string]int{}, denied: map[string]bool{}, busy: map[string]int{}, busyAs: "fault", backOff: 1000}
}

func (f *fakeEWS) url() string { return f.srv.URL + "/EWS/Exchange.asmx" }

func (f *fakeEWS) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	gate := f.gate
	n := f.inflight
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	if gate != nil {
		gate(n)
	}
	w.Header().Set("Content-Type", ContentType)
	if r.Method != http.MethodPost || r.URL.Path != "/EWS/Exchange.asmx" || r.Header.Get("Content-Type") != ContentType ||
		r.Header.Get("SOAPAction") != `"`+GetFolderAction+`"` {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	ok := f.authorized(r)
	f.mu.Unlock()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="mail.fabrikam.com"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(r.Body)
	call, err := readGetFolderRequest(body)
	if err != nil {
		f.t.Errorf("request: %v\n%s", err, body)
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write(FaultEnvelope("a:ErrorSchemaValidation", "The request failed schema validation."))
		return
	}
	if call.impersonated != "" && r.Header.Get("X-AnchorMailbox") != call.impersonated {
		f.t.Errorf("X-AnchorMailbox %q for impersonated %q", r.Header.Get("X-AnchorMailbox"), call.impersonated)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	user := call.mailbox
	count, known := f.unread[user]
	switch {
	case f.busy[user] > 0:
		f.busy[user]--
		f.writeBusy(w)
	case f.denied[user]:
		writeMessage(w, "Error", "ErrorAccessDenied", "Access is denied. Check credentials and try again.", "", "")
	case !known:
		writeMessage(w, "Error", "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.",
			`<t:Value Name="SmtpAddress">`+user+`</t:Value>`, "")
	default:
		writeMessage(w, "Success", "NoError", "", "", fmt.Sprintf(`<t:Folder><t:FolderId Id="AAMkAD%s=" ChangeKey="AQAAAB"/><t:UnreadCount>%d</t:UnreadCount></t:Folder>`, call.folder, count))
	}
}

// writeBusy answers ErrorServerBusy as f.busyAs says.
func (f *fakeEWS) writeBusy(w http.ResponseWriter) {
	backOff := ""
	if f.backOff > 0 {
		backOff = fmt.Sprintf(`<t:Value Name="BackOffMilliseconds">%d</t:Value>`, f.backOff)
	}
	switch f.busyAs {
	case "429":
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
	case "503":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "<html><body>Service Unavailable</body></html>")
	case "message":
		writeMessage(w, "Error", "ErrorServerBusy", "The server cannot service this request right now. Try again later.", backOff, "")
	default:
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="`+SOAPNamespace+`"><s:Body><s:Fault>`+
			`<faultcode xmlns:a="`+TypesNamespace+`">a:ErrorServerBusy</faultcode><faultstring xml:lang="en-US">The server cannot service this request right now. Try again later.</faultstring>`+
			`<detail><e:ResponseCode xmlns:e="`+ErrorsNamespace+`">ErrorServerBusy</e:ResponseCode>`+
			`<t:MessageXml xmlns:t="`+TypesNamespace+`">`+backOff+`</t:MessageXml></detail></s:Fault></s:Body></s:Envelope>`)
	}
}

// writeMessage answers with one GetFolderResponseMessage.
func writeMessage(w http.ResponseWriter, class, code, text, messageXML, folders string) {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="` + SOAPNamespace + `"><s:Header>` +
		`<h:ServerVersionInfo MajorVersion="15" MinorVersion="2" MajorBuildNumber="1544" MinorBuildNumber="4" xmlns:h="` + TypesNamespace + `"/></s:Header><s:Body>` +
		`<m:GetFolderResponse xmlns:m="` + MessagesNamespace + `" xmlns:t="` + TypesNamespace + `"><m:ResponseMessages>` +
		`<m:GetFolderResponseMessage ResponseClass="` + class + `">`)
	if text != "" {
		b.WriteString(`<m:MessageText>` + text + `</m:MessageText>`)
	}
	b.WriteString(`<m:ResponseCode>` + code + `</m:ResponseCode>`)
	if messageXML != "" {
		b.WriteString(`<m:MessageXml>` + messageXML + `</m:MessageXml>`)
	}
	b.WriteString(`<m:Folders>` + folders + `</m:Folders></m:GetFolderResponseMessage></m:ResponseMessages></m:GetFolderResponse></s:Body></s:Envelope>`)
	_, _ = w.Write(b.Bytes())
}

// received returns the requests so far.
func (f *fakeEWS) received() []getFolderCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// sleeps records the waits of a counter instead of waiting, and moves
// its clock on by them.
type sleeps struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newSleeps() *sleeps { return &sleeps{now: time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (s *sleeps) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waits = append(s.waits, d)
	s.now = s.now.Add(d)
	return ctx.Err()
}

// Now is the time after the waits so far.
func (s *sleeps) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *sleeps) recorded() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.waits)
}
