package ews

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SubscribeAction is the SOAPAction of a Subscribe request (MS-OXWSNTIF
// 3.1.4.3).
const SubscribeAction = MessagesNamespace + "/Subscribe"

// Response codes of Subscribe that the Manager acts on
// (m:ResponseCodeType): both mean the watermark cannot be resumed from.
// Any error a notification reports (ErrorReadEventsFailed,
// ErrorSubscriptionNotFound, ...) makes the subscription again.
const (
	// CodeInvalidWatermark: the watermark asked for is not in the
	// mailbox's event table (older than about 30 days, or never there).
	CodeInvalidWatermark = "ErrorInvalidWatermark"
	// CodeExpiredSubscription: the subscription (and so its watermark)
	// expired.
	CodeExpiredSubscription = "ErrorExpiredSubscription"
)

// Bounds of a push subscription's StatusFrequency, in minutes
// (t:SubscriptionStatusFrequencyType).
const (
	MinStatusFrequency = 1
	MaxStatusFrequency = 1440
)

// SubscribedEventTypes are the event types a push subscription of the
// Manager asks for: those Map reads. CreatedEvent, CopiedEvent and
// FreeBusyChangedEvent would only add traffic that Map drops; StatusEvent
// is not asked for, Exchange sends it every StatusFrequency anyway.
func SubscribedEventTypes() []EventType {
	return []EventType{EventNewMail, EventModified, EventDeleted, EventMoved}
}

// PushSubscription is what a push Subscribe request asks for.
type PushSubscription struct {
	// Mailbox is the SMTP address of the mailbox; Folder the distinguished
	// folder id watched in it, e.g. "inbox".
	Mailbox string
	Folder  string
	// EventTypes are the events to send.
	EventTypes []EventType
	// Watermark, when set, starts the subscription at that event of the
	// mailbox's event table: events since then are sent first. Empty
	// starts it now.
	Watermark string
	// StatusFrequency is how often, in minutes, Exchange sends a
	// StatusEvent when nothing happens, and how long it keeps retrying a
	// failed delivery before it ends the subscription (1 to 1440).
	StatusFrequency int
	// URL is where Exchange posts the notifications: ingest's EWS
	// endpoint with its key.
	URL string
}

// SubscribeRequest is the SOAP 1.1 envelope of a push Subscribe request:
//
//	<m:Subscribe>
//	  <m:PushSubscriptionRequest>
//	    <t:FolderIds>
//	      <t:DistinguishedFolderId Id="inbox">
//	        <t:Mailbox><t:EmailAddress>alice@fabrikam.com</t:EmailAddress></t:Mailbox>
//	      </t:DistinguishedFolderId>
//	    </t:FolderIds>
//	    <t:EventTypes><t:EventType>NewMailEvent</t:EventType>...</t:EventTypes>
//	    <t:Watermark>...</t:Watermark>
//	    <t:StatusFrequency>30</t:StatusFrequency>
//	    <t:URL>https://push.example.com/v1/ews?key=...</t:URL>
//	  </m:PushSubscriptionRequest>
//	</m:Subscribe>
//
// with the header GetFolderRequest has (RequestServerVersion and, when
// impersonate is set, ExchangeImpersonation of the mailbox). The elements
// of t:PushSubscriptionRequestType come in the schema's order; Watermark
// is left out when empty.
func SubscribeRequest(p PushSubscription, impersonate bool) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, p.Mailbox, impersonate)
	b.WriteString("    <m:Subscribe>\n")
	b.WriteString("      <m:PushSubscriptionRequest>\n")
	b.WriteString("        <t:FolderIds>\n")
	b.WriteString(`          <t:DistinguishedFolderId Id="`)
	writeText(&b, p.Folder)
	b.WriteString(`"><t:Mailbox><t:EmailAddress>`)
	writeText(&b, p.Mailbox)
	b.WriteString("</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>\n")
	b.WriteString("        </t:FolderIds>\n")
	b.WriteString("        <t:EventTypes>")
	for _, t := range p.EventTypes {
		b.WriteString("<t:EventType>")
		writeText(&b, string(t))
		b.WriteString("</t:EventType>")
	}
	b.WriteString("</t:EventTypes>\n")
	if p.Watermark != "" {
		b.WriteString("        <t:Watermark>")
		writeText(&b, p.Watermark)
		b.WriteString("</t:Watermark>\n")
	}
	b.WriteString("        <t:StatusFrequency>" + strconv.Itoa(p.StatusFrequency) + "</t:StatusFrequency>\n")
	b.WriteString("        <t:URL>")
	writeText(&b, p.URL)
	b.WriteString("</t:URL>\n")
	b.WriteString("      </m:PushSubscriptionRequest>\n")
	b.WriteString("    </m:Subscribe>\n")
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

// SubscribeAnswer is what the answer to a Subscribe request for one
// subscription says: a SOAP fault, or the one m:SubscribeResponseMessage.
type SubscribeAnswer struct {
	// Fault is set when the answer is a SOAP fault.
	Fault bool
	// ResponseClass is Success, Warning or Error; Error for a fault.
	ResponseClass string
	// ResponseCode is NoError or the error's code, e.g.
	// ErrorInvalidWatermark or ErrorServerBusy.
	ResponseCode string
	// MessageText is the error's text, shortened.
	MessageText string
	// BackOff is the BackOffMilliseconds of ErrorServerBusy, zero when
	// absent.
	BackOff time.Duration
	// SubscriptionID is the new subscription's m:SubscriptionId, on
	// success.
	SubscriptionID string
	// Watermark is the m:Watermark the subscription starts at, on
	// success; empty when the answer has none.
	Watermark string
}

func (a *SubscribeAnswer) soapStatus() soapStatus {
	return soapStatus{class: a.ResponseClass, code: a.ResponseCode, text: a.MessageText, backOff: a.BackOff}
}

// ErrMalformedSubscribeAnswer matches every error of DecodeSubscribe with
// errors.Is.
var ErrMalformedSubscribeAnswer = errors.New("malformed Subscribe answer")

func malformedSubscribe(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedSubscribeAnswer, fmt.Sprintf(format, args...))
}

type xmlSubscribeEnvelope struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
	Body    struct {
		Fault    *xmlFault `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault"`
		Response *struct {
			Messages []xmlSubscribeMessage `xml:"http://schemas.microsoft.com/exchange/services/2006/messages ResponseMessages>SubscribeResponseMessage"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SubscribeResponse"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
}

type xmlSubscribeMessage struct {
	ResponseClass  string        `xml:"ResponseClass,attr"`
	MessageText    string        `xml:"http://schemas.microsoft.com/exchange/services/2006/messages MessageText"`
	ResponseCode   string        `xml:"http://schemas.microsoft.com/exchange/services/2006/messages ResponseCode"`
	MessageXML     xmlMessageXML `xml:"http://schemas.microsoft.com/exchange/services/2006/messages MessageXml"`
	SubscriptionID *string       `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SubscriptionId"`
	Watermark      *string       `xml:"http://schemas.microsoft.com/exchange/services/2006/messages Watermark"`
}

// DecodeSubscribe reads the answer to a SubscribeRequest: a SOAP fault,
// or a SubscribeResponse with exactly one SubscribeResponseMessage, which
// on success holds the m:SubscriptionId and usually an m:Watermark (the
// schema makes both optional; an answer of class Success or Warning
// without a usable subscription id is an error). Identifiers are checked
// as the notification parser checks them (no white space, MaxIDLen and
// MaxWatermarkLen bytes at most), so that what the Manager stores is what
// notifications carry. Elements it does not know are skipped; every error
// matches ErrMalformedSubscribeAnswer.
func DecodeSubscribe(body []byte) (*SubscribeAnswer, error) {
	var env xmlSubscribeEnvelope
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.CharsetReader = utf8Only
	if err := dec.Decode(&env); err != nil {
		return nil, malformedSubscribe("%v", err)
	}
	if f := env.Body.Fault; f != nil {
		st, err := readFault(f)
		if err != nil {
			return nil, malformedSubscribe("%v", err)
		}
		return newSubscribeAnswer(true, st), nil
	}
	if env.Body.Response == nil {
		return nil, malformedSubscribe("no m:SubscribeResponse or s:Fault")
	}
	msgs := env.Body.Response.Messages
	if len(msgs) != 1 {
		return nil, malformedSubscribe("%d response messages for one subscription", len(msgs))
	}
	m := &msgs[0]
	st, err := readMessage(m.ResponseClass, m.ResponseCode, m.MessageText, &m.MessageXML)
	if err != nil {
		return nil, malformedSubscribe("%v", err)
	}
	a := newSubscribeAnswer(false, st)
	if st.class == ClassError {
		return a, nil
	}
	if m.SubscriptionID == nil {
		return nil, malformedSubscribe("no m:SubscriptionId in a %s message", st.class)
	}
	a.SubscriptionID = strings.TrimSpace(*m.SubscriptionID)
	if a.SubscriptionID == "" || checkToken("", a.SubscriptionID, MaxIDLen) != nil {
		return nil, malformedSubscribe("the m:SubscriptionId is empty, too long or has white space")
	}
	if m.Watermark != nil {
		a.Watermark = strings.TrimSpace(*m.Watermark)
		if checkToken("", a.Watermark, MaxWatermarkLen) != nil {
			return nil, malformedSubscribe("the m:Watermark is too long or has white space")
		}
	}
	return a, nil
}

// newSubscribeAnswer is the answer of status st.
func newSubscribeAnswer(fault bool, st soapStatus) *SubscribeAnswer {
	return &SubscribeAnswer{Fault: fault, ResponseClass: st.class, ResponseCode: st.code, MessageText: st.text, BackOff: st.backOff}
}
