package ews

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// XML namespaces of EWS push notifications.
const (
	SOAPNamespace     = "http://schemas.xmlsoap.org/soap/envelope/"
	MessagesNamespace = "http://schemas.microsoft.com/exchange/services/2006/messages"
	TypesNamespace    = "http://schemas.microsoft.com/exchange/services/2006/types"
)

// SOAPAction is the SOAPAction header value of a SendNotification request
// (MS-OXWSPSNTIF 3.1.4.1).
const SOAPAction = MessagesNamespace + "/SendNotification"

// Limits on the parts of a request. Exchange identifiers are base64 of at
// most 512 bytes (MS-OXWSFOLD), about 700 characters; watermarks are short.
const (
	MaxIDLen        = 1024
	MaxWatermarkLen = 256
	MaxMessages     = 64
	MaxEvents       = 4096
)

// EventType is the element name of a notification event.
type EventType string

// The events of t:NotificationType (MS-OXWSNTIF 2.2.4.8).
const (
	EventNewMail         EventType = "NewMailEvent"
	EventCreated         EventType = "CreatedEvent"
	EventModified        EventType = "ModifiedEvent"
	EventMoved           EventType = "MovedEvent"
	EventCopied          EventType = "CopiedEvent"
	EventDeleted         EventType = "DeletedEvent"
	EventFreeBusyChanged EventType = "FreeBusyChangedEvent"
	EventStatus          EventType = "StatusEvent"
)

// EventTypes lists every event type in schema order.
func EventTypes() []EventType {
	return []EventType{EventCopied, EventCreated, EventDeleted, EventModified, EventMoved, EventNewMail, EventStatus, EventFreeBusyChanged}
}

// Known reports whether t is an event type of the schema.
func (t EventType) Known() bool {
	for _, k := range EventTypes() {
		if t == k {
			return true
		}
	}
	return false
}

// hasObject reports whether events of this type carry TimeStamp, an item or
// folder id and ParentFolderId (t:BaseObjectChangedEventType); StatusEvent
// is a bare t:BaseNotificationEventType with only a Watermark.
func (t EventType) hasObject() bool { return t.Known() && t != EventStatus }

// movedOrCopied reports whether events of this type are t:MovedCopiedEventType.
func (t EventType) movedOrCopied() bool { return t == EventMoved || t == EventCopied }

// ID is an Exchange item or folder identifier (t:ItemIdType, t:FolderIdType).
type ID struct {
	ID        string
	ChangeKey string
}

// Request is a parsed SendNotification request: one or more response
// messages, each normally about one subscription.
type Request struct {
	Messages []Message
}

// Response classes of m:ResponseMessageType.
const (
	ClassSuccess = "Success"
	ClassWarning = "Warning"
	ClassError   = "Error"
)

// Message is one m:SendNotificationResponseMessage.
//
// A message of class Error (for example ResponseCode ErrorReadEventsFailed,
// "the subscription must be created again") usually has no Notification;
// SubscriptionID then comes from m:MessageXml/t:Value[@Name="SubscriptionId"].
type Message struct {
	ResponseClass  string
	ResponseCode   string
	MessageText    string
	SubscriptionID string
	Notification   *Notification
}

// Notification is a t:NotificationType: the events of one subscription
// since PreviousWatermark, in the order Exchange listed them.
type Notification struct {
	SubscriptionID    string
	PreviousWatermark string
	MoreEvents        bool
	Events            []Event
}

// Event is one event of a notification. StatusEvent carries only
// Watermark. Other events carry TimeStamp, exactly one of ItemID and
// FolderID, and ParentFolderID; MovedEvent and CopiedEvent add exactly one
// of OldItemID and OldFolderID, and OldParentFolderID.
//
// UnreadCount is set only on a ModifiedEvent that carries t:UnreadCount.
// Schema (MS-OXWSNTIF 2.2.4.6): t:ModifiedEventType extends
// t:BaseObjectChangedEventType with <xs:element name="UnreadCount"
// type="xs:int" minOccurs="0"/> (maxOccurs 1 since Exchange 2010). The EWS
// reference for ModifiedEvent says that each change of an item in a folder
// produces two ModifiedEvents, one for the item and one for its parent
// folder, and that the folder's event "is used to communicate a potential
// change to the UnreadCount property on the folder". So the count belongs to
// the folder named by FolderID, and an item's ModifiedEvent has none.
type Event struct {
	Type              EventType
	Watermark         string
	TimeStamp         time.Time
	ItemID            *ID
	FolderID          *ID
	ParentFolderID    *ID
	OldItemID         *ID
	OldFolderID       *ID
	OldParentFolderID *ID
	UnreadCount       *int
}

// Object is the id of the item or folder the event is about.
func (e *Event) Object() *ID {
	if e.ItemID != nil {
		return e.ItemID
	}
	return e.FolderID
}

// ErrMalformed matches every *ParseError with errors.Is.
var ErrMalformed = errors.New("malformed SendNotification request")

// ParseError says what is wrong with a request body.
type ParseError struct {
	// Where names the element, e.g. "Notification/NewMailEvent[2]/TimeStamp".
	Where  string
	Reason string
}

func (e *ParseError) Error() string {
	if e.Where == "" {
		return "malformed SendNotification request: " + e.Reason
	}
	return fmt.Sprintf("malformed SendNotification request: %s: %s", e.Where, e.Reason)
}

// Is makes errors.Is(err, ErrMalformed) true for parse errors.
func (e *ParseError) Is(target error) bool { return target == ErrMalformed }

func malformed(where, format string, args ...any) error {
	return &ParseError{Where: where, Reason: fmt.Sprintf(format, args...)}
}

// The XML shapes below follow MS-OXWSPSNTIF 3.1.4.1.2 and MS-OXWSNTIF 2.2.4.
// Names are matched with their namespaces, whatever prefixes the sender uses.

type xmlEnvelope struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
	Body    struct {
		SendNotification *struct {
			Messages []xmlMessage `xml:"http://schemas.microsoft.com/exchange/services/2006/messages ResponseMessages>SendNotificationResponseMessage"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SendNotification"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
}

type xmlMessage struct {
	ResponseClass string `xml:"ResponseClass,attr"`
	MessageText   string `xml:"http://schemas.microsoft.com/exchange/services/2006/messages MessageText"`
	ResponseCode  string `xml:"http://schemas.microsoft.com/exchange/services/2006/messages ResponseCode"`
	MessageXML    struct {
		Values []struct {
			Name  string `xml:"Name,attr"`
			Value string `xml:",chardata"`
		} `xml:"http://schemas.microsoft.com/exchange/services/2006/types Value"`
	} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages MessageXml"`
	Notification *xmlNotification `xml:"http://schemas.microsoft.com/exchange/services/2006/messages Notification"`
}

type xmlNotification struct {
	SubscriptionID    string     `xml:"http://schemas.microsoft.com/exchange/services/2006/types SubscriptionId"`
	PreviousWatermark string     `xml:"http://schemas.microsoft.com/exchange/services/2006/types PreviousWatermark"`
	MoreEvents        string     `xml:"http://schemas.microsoft.com/exchange/services/2006/types MoreEvents"`
	Events            []xmlEvent `xml:",any"`
}

type xmlEvent struct {
	XMLName           xml.Name
	Watermark         string  `xml:"http://schemas.microsoft.com/exchange/services/2006/types Watermark"`
	TimeStamp         *string `xml:"http://schemas.microsoft.com/exchange/services/2006/types TimeStamp"`
	ItemID            *xmlID  `xml:"http://schemas.microsoft.com/exchange/services/2006/types ItemId"`
	FolderID          *xmlID  `xml:"http://schemas.microsoft.com/exchange/services/2006/types FolderId"`
	ParentFolderID    *xmlID  `xml:"http://schemas.microsoft.com/exchange/services/2006/types ParentFolderId"`
	OldItemID         *xmlID  `xml:"http://schemas.microsoft.com/exchange/services/2006/types OldItemId"`
	OldFolderID       *xmlID  `xml:"http://schemas.microsoft.com/exchange/services/2006/types OldFolderId"`
	OldParentFolderID *xmlID  `xml:"http://schemas.microsoft.com/exchange/services/2006/types OldParentFolderId"`
	UnreadCount       *string `xml:"http://schemas.microsoft.com/exchange/services/2006/types UnreadCount"`
}

type xmlID struct {
	ID        string `xml:"Id,attr"`
	ChangeKey string `xml:"ChangeKey,attr"`
}

// Decode parses and checks a SendNotification request body. It returns a
// *ParseError (errors.Is ErrMalformed) when the body is not a SOAP 1.1
// envelope holding m:SendNotification, or when a known event lacks an
// element the schema requires or has a value of the wrong type. Elements
// it does not know are ignored, so a newer Exchange does not break it.
func Decode(body []byte) (*Request, error) {
	var env xmlEnvelope
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.CharsetReader = utf8Only
	if err := dec.Decode(&env); err != nil {
		return nil, malformed("", "%v", err)
	}
	// Anything after the envelope other than white space and comments is junk.
	if err := expectEnd(dec); err != nil {
		return nil, err
	}
	sn := env.Body.SendNotification
	if sn == nil {
		return nil, malformed("Body", "no m:SendNotification element")
	}
	if len(sn.Messages) == 0 {
		return nil, malformed("SendNotification", "no m:ResponseMessages/m:SendNotificationResponseMessage")
	}
	if len(sn.Messages) > MaxMessages {
		return nil, malformed("SendNotification", "%d response messages (at most %d)", len(sn.Messages), MaxMessages)
	}
	req := &Request{Messages: make([]Message, 0, len(sn.Messages))}
	total := 0
	for i := range sn.Messages {
		m, err := convertMessage(&sn.Messages[i], fmt.Sprintf("SendNotificationResponseMessage[%d]", i+1))
		if err != nil {
			return nil, err
		}
		if m.Notification != nil {
			total += len(m.Notification.Events)
		}
		if total > MaxEvents {
			return nil, malformed("SendNotification", "more than %d events", MaxEvents)
		}
		req.Messages = append(req.Messages, m)
	}
	return req, nil
}

func utf8Only(charset string, input io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return input, nil
	}
	return nil, fmt.Errorf("unsupported charset %q (Exchange sends utf-8)", charset)
}

func expectEnd(dec *xml.Decoder) error {
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return malformed("", "after the envelope: %v", err)
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return malformed("", "text after the envelope")
			}
		default:
			return malformed("", "content after the envelope")
		}
	}
}

func convertMessage(x *xmlMessage, where string) (Message, error) {
	m := Message{
		ResponseClass: strings.TrimSpace(x.ResponseClass),
		ResponseCode:  strings.TrimSpace(x.ResponseCode),
		MessageText:   strings.TrimSpace(x.MessageText),
	}
	switch m.ResponseClass {
	case ClassSuccess, ClassWarning, ClassError:
	default:
		return Message{}, malformed(where, "ResponseClass %q is not Success, Warning or Error", m.ResponseClass)
	}
	for _, v := range x.MessageXML.Values {
		if v.Name == "SubscriptionId" {
			m.SubscriptionID = strings.TrimSpace(v.Value)
		}
	}
	if x.Notification != nil {
		n, err := convertNotification(x.Notification, where+"/Notification")
		if err != nil {
			return Message{}, err
		}
		m.Notification = n
		m.SubscriptionID = n.SubscriptionID
	} else if m.ResponseClass != ClassError {
		return Message{}, malformed(where, "no m:Notification in a %s message", m.ResponseClass)
	}
	if err := checkToken(where+"/SubscriptionId", m.SubscriptionID, MaxIDLen); err != nil {
		return Message{}, err
	}
	if m.SubscriptionID == "" && m.ResponseClass != ClassError {
		return Message{}, malformed(where+"/Notification/SubscriptionId", "required")
	}
	return m, nil
}

func convertNotification(x *xmlNotification, where string) (*Notification, error) {
	n := &Notification{
		SubscriptionID:    strings.TrimSpace(x.SubscriptionID),
		PreviousWatermark: strings.TrimSpace(x.PreviousWatermark),
	}
	if n.SubscriptionID == "" {
		return nil, malformed(where+"/SubscriptionId", "required")
	}
	if err := checkToken(where+"/PreviousWatermark", n.PreviousWatermark, MaxWatermarkLen); err != nil {
		return nil, err
	}
	if mv := strings.TrimSpace(x.MoreEvents); mv != "" {
		b, err := parseBool(mv)
		if err != nil {
			return nil, malformed(where+"/MoreEvents", "%v", err)
		}
		n.MoreEvents = b
	}
	seen := map[EventType]int{}
	for i := range x.Events {
		xe := &x.Events[i]
		t := EventType(xe.XMLName.Local)
		if xe.XMLName.Space != TypesNamespace || !t.Known() {
			continue
		}
		seen[t]++
		ev, err := convertEvent(t, xe, fmt.Sprintf("%s/%s[%d]", where, t, seen[t]))
		if err != nil {
			return nil, err
		}
		n.Events = append(n.Events, ev)
	}
	return n, nil
}

// parseBool parses an xs:boolean.
func parseBool(s string) (bool, error) {
	switch s {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not an xs:boolean", s)
}

func convertEvent(t EventType, x *xmlEvent, where string) (Event, error) {
	ev := Event{Type: t, Watermark: strings.TrimSpace(x.Watermark)}
	if err := checkToken(where+"/Watermark", ev.Watermark, MaxWatermarkLen); err != nil {
		return Event{}, err
	}
	if !t.hasObject() {
		return ev, nil
	}
	if x.TimeStamp == nil {
		return Event{}, malformed(where+"/TimeStamp", "required")
	}
	ts, err := parseDateTime(strings.TrimSpace(*x.TimeStamp))
	if err != nil {
		return Event{}, malformed(where+"/TimeStamp", "%v", err)
	}
	ev.TimeStamp = ts
	if ev.ItemID, ev.FolderID, err = oneOf(where, "ItemId", x.ItemID, "FolderId", x.FolderID); err != nil {
		return Event{}, err
	}
	if ev.ParentFolderID, err = required(where+"/ParentFolderId", x.ParentFolderID); err != nil {
		return Event{}, err
	}
	if t.movedOrCopied() {
		if ev.OldItemID, ev.OldFolderID, err = oneOf(where, "OldItemId", x.OldItemID, "OldFolderId", x.OldFolderID); err != nil {
			return Event{}, err
		}
		if ev.OldParentFolderID, err = required(where+"/OldParentFolderId", x.OldParentFolderID); err != nil {
			return Event{}, err
		}
	}
	if t == EventModified && x.UnreadCount != nil {
		n, err := parseInt(strings.TrimSpace(*x.UnreadCount))
		if err != nil {
			return Event{}, malformed(where+"/UnreadCount", "%v", err)
		}
		ev.UnreadCount = &n
	}
	return ev, nil
}

// parseInt parses a non-negative xs:int.
func parseInt(s string) (int, error) {
	if s == "" || len(s) > 10 {
		return 0, fmt.Errorf("%q is not a count", s)
	}
	n := 0
	for i, c := range s {
		if c == '+' && i == 0 && len(s) > 1 {
			continue
		}
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a count", s)
		}
		n = n*10 + int(c-'0')
	}
	if n > 1<<31-1 {
		return 0, fmt.Errorf("%q is larger than an xs:int", s)
	}
	return n, nil
}

// parseDateTime parses an xs:dateTime. Exchange writes UTC with a Z; a time
// without a zone is taken as UTC.
func parseDateTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an xs:dateTime", s)
}

func oneOf(where, aName string, a *xmlID, bName string, b *xmlID) (*ID, *ID, error) {
	switch {
	case a != nil && b != nil:
		return nil, nil, malformed(where, "both t:%s and t:%s", aName, bName)
	case a != nil:
		id, err := convertID(where+"/"+aName, a)
		return id, nil, err
	case b != nil:
		id, err := convertID(where+"/"+bName, b)
		return nil, id, err
	}
	return nil, nil, malformed(where, "t:%s or t:%s required", aName, bName)
}

func required(where string, x *xmlID) (*ID, error) {
	if x == nil {
		return nil, malformed(where, "required")
	}
	return convertID(where, x)
}

func convertID(where string, x *xmlID) (*ID, error) {
	id := &ID{ID: strings.TrimSpace(x.ID), ChangeKey: strings.TrimSpace(x.ChangeKey)}
	if id.ID == "" {
		return nil, malformed(where, "the Id attribute is required")
	}
	if err := checkToken(where+"@Id", id.ID, MaxIDLen); err != nil {
		return nil, err
	}
	if err := checkToken(where+"@ChangeKey", id.ChangeKey, MaxIDLen); err != nil {
		return nil, err
	}
	return id, nil
}

// checkToken bounds an opaque identifier and keeps control characters and
// white space out of it (Exchange identifiers are base64).
func checkToken(where, s string, limit int) error {
	if len(s) > limit {
		return malformed(where, "longer than %d bytes", limit)
	}
	if !utf8.ValidString(s) {
		return malformed(where, "not valid UTF-8")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return malformed(where, "contains white space or a control character")
		}
	}
	return nil
}
