package ews

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/pushproxy/pushproxy/internal/clip"
)

// GetFolderAction is the SOAPAction of a GetFolder request (MS-OXWSFOLD
// 3.1.4.6).
const GetFolderAction = MessagesNamespace + "/GetFolder"

// RequestServerVersion is the EWS schema version GetFolderRequest names:
// the oldest that Exchange 2010 SP1 and every later Exchange, Exchange
// Online included, accept.
const RequestServerVersion = "Exchange2010_SP1"

// ErrorsNamespace is the namespace of the detail of EWS SOAP faults.
const ErrorsNamespace = "http://schemas.microsoft.com/exchange/services/2006/errors"

// Response codes the counter acts on (m:ResponseCodeType).
const (
	// CodeNoError is the code of a successful response message.
	CodeNoError = "NoError"
	// CodeServerBusy is EWS throttling: wait BackOffMilliseconds.
	CodeServerBusy = "ErrorServerBusy"
	// CodeNonExistentMailbox means no mailbox has the SMTP address.
	CodeNonExistentMailbox = "ErrorNonExistentMailbox"
	// CodeMailboxNotFound is how some Exchange versions say the same.
	CodeMailboxNotFound = "ErrorMailboxNotFound"
	// CodeInvalidSMTPAddress means the address is not an SMTP address.
	CodeInvalidSMTPAddress = "ErrorInvalidSmtpAddress"
)

// Limits on what an answer may hold.
const (
	maxCodeLen    = 128
	maxAnswerText = 512
	// backOffMillisecondsValue names the t:Value of a throttling answer's
	// MessageXml.
	backOffMillisecondsValue = "BackOffMilliseconds"
)

// GetFolderRequest is the SOAP 1.1 envelope of a GetFolder request for
// the unread count of a distinguished folder (e.g. "inbox") of mailbox,
// an SMTP address:
//
//	<m:GetFolder>
//	  <m:FolderShape>
//	    <t:BaseShape>IdOnly</t:BaseShape>
//	    <t:AdditionalProperties><t:FieldURI FieldURI="folder:UnreadCount"/></t:AdditionalProperties>
//	  </m:FolderShape>
//	  <m:FolderIds>
//	    <t:DistinguishedFolderId Id="inbox">
//	      <t:Mailbox><t:EmailAddress>alice@fabrikam.com</t:EmailAddress></t:Mailbox>
//	    </t:DistinguishedFolderId>
//	  </m:FolderIds>
//	</m:GetFolder>
//
// Its header names RequestServerVersion and, when impersonate is set,
// an ExchangeImpersonation acting as mailbox (ConnectingSID/
// PrimarySmtpAddress), which app-only tokens and service accounts with
// the ApplicationImpersonation role need.
func GetFolderRequest(mailbox, folder string, impersonate bool) []byte {
	var b bytes.Buffer
	writeEnvelopeStart(&b, mailbox, impersonate)
	b.WriteString("    <m:GetFolder>\n")
	b.WriteString("      <m:FolderShape>\n")
	b.WriteString("        <t:BaseShape>IdOnly</t:BaseShape>\n")
	b.WriteString(`        <t:AdditionalProperties><t:FieldURI FieldURI="folder:UnreadCount"/></t:AdditionalProperties>` + "\n")
	b.WriteString("      </m:FolderShape>\n")
	b.WriteString("      <m:FolderIds>\n")
	b.WriteString(`        <t:DistinguishedFolderId Id="`)
	writeText(&b, folder)
	b.WriteString(`"><t:Mailbox><t:EmailAddress>`)
	writeText(&b, mailbox)
	b.WriteString("</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>\n")
	b.WriteString("      </m:FolderIds>\n")
	b.WriteString("    </m:GetFolder>\n")
	writeEnvelopeEnd(&b)
	return b.Bytes()
}

// FolderAnswer is what a GetFolder answer for one folder says: a SOAP
// fault, or the one m:GetFolderResponseMessage.
type FolderAnswer struct {
	// Fault is set when the answer is a SOAP fault (Exchange Online
	// answers throttling so, with HTTP 500).
	Fault bool
	// ResponseClass is Success, Warning or Error; Error for a fault.
	ResponseClass string
	// ResponseCode is NoError or the error's code, e.g.
	// ErrorNonExistentMailbox or ErrorServerBusy.
	ResponseCode string
	// MessageText is the error's text, shortened.
	MessageText string
	// BackOff is the BackOffMilliseconds of the answer's MessageXml
	// (ErrorServerBusy), zero when absent.
	BackOff time.Duration
	// UnreadCount is the folder's t:UnreadCount, on success.
	UnreadCount int
	// FolderID is the Id of the folder's t:FolderId, on success; empty
	// when the answer has none. It is what notifications name the folder
	// by (Subscription.InboxFolderID for the Inbox).
	FolderID string
}

func (a *FolderAnswer) soapStatus() soapStatus {
	return soapStatus{class: a.ResponseClass, code: a.ResponseCode, text: a.MessageText, backOff: a.BackOff}
}

// ErrMalformedAnswer matches every error of DecodeGetFolder with
// errors.Is.
var ErrMalformedAnswer = errors.New("malformed GetFolder answer")

func malformedAnswer(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedAnswer, fmt.Sprintf(format, args...))
}

type xmlGetFolderEnvelope struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
	Body    struct {
		Fault    *xmlFault `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault"`
		Response *struct {
			Messages []xmlFolderMessage `xml:"http://schemas.microsoft.com/exchange/services/2006/messages ResponseMessages>GetFolderResponseMessage"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages GetFolderResponse"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
}

type xmlFolderMessage struct {
	ResponseClass string        `xml:"ResponseClass,attr"`
	MessageText   string        `xml:"http://schemas.microsoft.com/exchange/services/2006/messages MessageText"`
	ResponseCode  string        `xml:"http://schemas.microsoft.com/exchange/services/2006/messages ResponseCode"`
	MessageXML    xmlMessageXML `xml:"http://schemas.microsoft.com/exchange/services/2006/messages MessageXml"`
	Folders       struct {
		Folders []struct {
			XMLName  xml.Name
			FolderID *struct {
				ID string `xml:"Id,attr"`
			} `xml:"http://schemas.microsoft.com/exchange/services/2006/types FolderId"`
			UnreadCount *string `xml:"http://schemas.microsoft.com/exchange/services/2006/types UnreadCount"`
		} `xml:",any"`
	} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages Folders"`
}

// xmlFault is a SOAP 1.1 fault; its children are unqualified, and EWS
// puts ResponseCode (errors namespace), Message and MessageXml (types
// namespace) in its detail. Those are matched in any namespace.
type xmlFault struct {
	Code   string `xml:"faultcode"`
	String string `xml:"faultstring"`
	Detail struct {
		ResponseCode string        `xml:"ResponseCode"`
		Message      string        `xml:"Message"`
		MessageXML   xmlMessageXML `xml:"MessageXml"`
	} `xml:"detail"`
}

type xmlMessageXML struct {
	Values []struct {
		Name  string `xml:"Name,attr"`
		Value string `xml:",chardata"`
	} `xml:"Value"`
}

// DecodeGetFolder reads the answer to a GetFolderRequest: a SOAP fault,
// or a GetFolderResponse with exactly one GetFolderResponseMessage, which
// on success holds exactly one folder with its t:UnreadCount. Elements it
// does not know are skipped.
func DecodeGetFolder(body []byte) (*FolderAnswer, error) {
	var env xmlGetFolderEnvelope
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.CharsetReader = utf8Only
	if err := dec.Decode(&env); err != nil {
		return nil, malformedAnswer("%v", err)
	}
	if f := env.Body.Fault; f != nil {
		return faultAnswer(f)
	}
	if env.Body.Response == nil {
		return nil, malformedAnswer("no m:GetFolderResponse or s:Fault")
	}
	msgs := env.Body.Response.Messages
	if len(msgs) != 1 {
		return nil, malformedAnswer("%d response messages for one folder", len(msgs))
	}
	m := &msgs[0]
	st, err := readMessage(m.ResponseClass, m.ResponseCode, m.MessageText, &m.MessageXML)
	if err != nil {
		return nil, malformedAnswer("%v", err)
	}
	a := &FolderAnswer{ResponseClass: st.class, ResponseCode: st.code, MessageText: st.text, BackOff: st.backOff}
	if a.ResponseClass == ClassError {
		return a, nil
	}
	folders := m.Folders.Folders
	if len(folders) != 1 || folders[0].XMLName.Space != TypesNamespace {
		return nil, malformedAnswer("%d folders for one folder id", len(folders))
	}
	if folders[0].UnreadCount == nil {
		return nil, malformedAnswer("the folder has no t:UnreadCount")
	}
	n, err := parseInt(strings.TrimSpace(*folders[0].UnreadCount))
	if err != nil {
		return nil, malformedAnswer("t:UnreadCount: %v", err)
	}
	a.UnreadCount = n
	if id := folders[0].FolderID; id != nil {
		a.FolderID = strings.TrimSpace(id.ID)
		if a.FolderID == "" || checkToken("", a.FolderID, MaxIDLen) != nil {
			return nil, malformedAnswer("the folder's t:FolderId has no usable Id")
		}
	}
	return a, nil
}

// faultAnswer reads a SOAP fault (see readFault).
func faultAnswer(f *xmlFault) (*FolderAnswer, error) {
	st, err := readFault(f)
	if err != nil {
		return nil, malformedAnswer("%v", err)
	}
	return &FolderAnswer{Fault: true, ResponseClass: st.class, ResponseCode: st.code, MessageText: st.text, BackOff: st.backOff}, nil
}

// clipAnswer keeps text from an answer short, valid UTF-8 and on one
// line.
func clipAnswer(s string) string {
	s = strings.Join(strings.FieldsFunc(strings.ToValidUTF8(s, "\uFFFD"), func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	return clip.Cut(s, maxAnswerText)
}
