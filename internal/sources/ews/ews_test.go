package ews

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

var update = flag.Bool("update", false, "rewrite the golden answer files in testdata/")

const (
	subID   = "FwBleGNoMDEuZmFicmlrYW0uY29tEAAAAL9T5gfVLkJMqeS2ZbJhFyPX4JtH5NPaCA=="
	inboxID = "AAMkADk1ZGY0ZjNmLTJmZjMtNDg4Zi1hYzQ1LTBmMmRiOTQ2ZGE5NAAuAAAAAACJhUi+Ncr4QbV9dCaXEVhHAQCdQw6nHzAxRpkuT1MdYAp0AAAAAAEMAAA="
	// otherID is the folder the golden MovedEvent moves a message to.
	otherID = "AAMkADk1ZGY0ZjNmLTJmZjMtNDg4Zi1hYzQ1LTBmMmRiOTQ2ZGE5NAAuAAAAAACJhUi+Ncr4QbV9dCaXEVhHAQCdQw6nHzAxRpkuT1MdYAp0AAAAAAEKAAA="
)

var alice = Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com", InboxFolderID: inboxID}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	return testfs.Read(t, filepath.Join("testdata", name))
}

func parseFile(t *testing.T, name string) *Request {
	t.Helper()
	req, err := Decode(readFile(t, name))
	if err != nil {
		t.Fatalf("Decode(%s): %v", name, err)
	}
	return req
}

func eventTypes(n *Notification) []EventType {
	var out []EventType
	for _, e := range n.Events {
		out = append(out, e.Type)
	}
	return out
}

func TestParseGoldenRequests(t *testing.T) {
	tests := []struct {
		file       string
		class      string
		code       string
		types      []EventType
		moreEvents bool
	}{
		{"sendnotification_newmail.xml", ClassSuccess, "NoError", []EventType{EventCreated, EventNewMail, EventModified}, false},
		{"sendnotification_status.xml", ClassSuccess, "NoError", []EventType{EventStatus}, false},
		{"sendnotification_moved.xml", ClassSuccess, "NoError", []EventType{EventModified, EventMoved, EventDeleted, EventModified}, true},
		{"sendnotification_error.xml", ClassError, "ErrorReadEventsFailed", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			req := parseFile(t, tt.file)
			if len(req.Messages) != 1 {
				t.Fatalf("%d messages, want 1", len(req.Messages))
			}
			m := req.Messages[0]
			if m.ResponseClass != tt.class || m.ResponseCode != tt.code || m.SubscriptionID != subID {
				t.Fatalf("message = %s/%s/%s, want %s/%s/%s", m.ResponseClass, m.ResponseCode, m.SubscriptionID, tt.class, tt.code, subID)
			}
			if tt.types == nil {
				if m.Notification != nil {
					t.Fatalf("error message has a notification")
				}
				return
			}
			if got := eventTypes(m.Notification); !slices.Equal(got, tt.types) {
				t.Fatalf("event types %v, want %v", got, tt.types)
			}
			if m.Notification.MoreEvents != tt.moreEvents {
				t.Fatalf("MoreEvents = %v, want %v", m.Notification.MoreEvents, tt.moreEvents)
			}
		})
	}
}

func TestParseEventDetails(t *testing.T) {
	n := parseFile(t, "sendnotification_newmail.xml").Messages[0].Notification
	if n.PreviousWatermark != "AQAAAOeN0NC0hgNHvU+3Bxu0kFeyqBIAAAAAAAA=" {
		t.Fatalf("PreviousWatermark = %q", n.PreviousWatermark)
	}
	nm := n.Events[1]
	if nm.ItemID == nil || nm.FolderID != nil || nm.ItemID.ChangeKey != "CQAAAA==" || nm.ParentFolderID.ID != inboxID {
		t.Fatalf("NewMailEvent ids = %+v", nm)
	}
	if want := time.Date(2024, 5, 14, 9, 21, 7, 0, time.UTC); !nm.TimeStamp.Equal(want) {
		t.Fatalf("TimeStamp = %v, want %v", nm.TimeStamp, want)
	}
	mod := n.Events[2]
	if mod.FolderID == nil || mod.FolderID.ID != inboxID || mod.UnreadCount == nil || *mod.UnreadCount != 3 {
		t.Fatalf("folder ModifiedEvent = %+v", mod)
	}
	moved := parseFile(t, "sendnotification_moved.xml").Messages[0].Notification.Events[1]
	if moved.OldItemID == nil || moved.OldParentFolderID.ID != inboxID || moved.ParentFolderID.ID != otherID {
		t.Fatalf("MovedEvent = %+v", moved)
	}
}

// envelope wraps notification content the way Exchange does.
func envelope(inner string) string {
	return `<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<m:SendNotification xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
<m:ResponseMessages>` + inner + `</m:ResponseMessages></m:SendNotification></s:Body></s:Envelope>`
}

func notification(events string) string {
	return envelope(`<m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>
<m:Notification><t:SubscriptionId>` + subID + `</t:SubscriptionId><t:PreviousWatermark>AQAA</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents>` +
		events + `</m:Notification></m:SendNotificationResponseMessage>`)
}

const (
	newMail = `<t:NewMailEvent><t:Watermark>W1</t:Watermark><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:ItemId Id="I1"/><t:ParentFolderId Id="` + inboxID + `"/></t:NewMailEvent>`
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"empty", ``, "EOF"},
		{"not xml", `hello`, "EOF"},
		{"json", `{"value":[]}`, "EOF"},
		{"other root", `<Envelope/>`, "expected element <Envelope> in name space"},
		{"soap 1.2", `<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>`, "expected element"},
		{"no SendNotification", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>`, "no m:SendNotification"},
		{"no messages", envelope(``), "no m:ResponseMessages"},
		{"bad class", envelope(`<m:SendNotificationResponseMessage ResponseClass="Maybe"/>`), `ResponseClass "Maybe"`},
		{"success without notification", envelope(`<m:SendNotificationResponseMessage ResponseClass="Success"/>`), "no m:Notification"},
		{"no subscription id", envelope(`<m:SendNotificationResponseMessage ResponseClass="Success"><m:Notification/></m:SendNotificationResponseMessage>`), "SubscriptionId: required"},
		{"bad MoreEvents", strings.Replace(notification(""), "<t:MoreEvents>false", "<t:MoreEvents>perhaps", 1), "MoreEvents"},
		{"no TimeStamp", notification(`<t:NewMailEvent><t:ItemId Id="I"/><t:ParentFolderId Id="P"/></t:NewMailEvent>`), "NewMailEvent[1]/TimeStamp: required"},
		{"bad TimeStamp", notification(`<t:NewMailEvent><t:TimeStamp>yesterday</t:TimeStamp><t:ItemId Id="I"/><t:ParentFolderId Id="P"/></t:NewMailEvent>`), "not an xs:dateTime"},
		{"no object", notification(`<t:NewMailEvent><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:ParentFolderId Id="P"/></t:NewMailEvent>`), "t:ItemId or t:FolderId required"},
		{"both objects", notification(`<t:DeletedEvent><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:ItemId Id="I"/><t:FolderId Id="F"/><t:ParentFolderId Id="P"/></t:DeletedEvent>`), "both t:ItemId and t:FolderId"},
		{"empty id", notification(`<t:NewMailEvent><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:ItemId Id=""/><t:ParentFolderId Id="P"/></t:NewMailEvent>`), "Id attribute is required"},
		{"id with space", notification(`<t:NewMailEvent><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:ItemId Id="a b"/><t:ParentFolderId Id="P"/></t:NewMailEvent>`), "white space"},
		{"no parent", notification(`<t:NewMailEvent><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:ItemId Id="I"/></t:NewMailEvent>`), "ParentFolderId: required"},
		{"moved without old parent", notification(`<t:MovedEvent><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:ItemId Id="I"/><t:ParentFolderId Id="P"/><t:OldItemId Id="O"/></t:MovedEvent>`), "OldParentFolderId: required"},
		{"negative UnreadCount", notification(`<t:ModifiedEvent><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:FolderId Id="F"/><t:ParentFolderId Id="P"/><t:UnreadCount>-1</t:UnreadCount></t:ModifiedEvent>`), "UnreadCount"},
		{"huge UnreadCount", notification(`<t:ModifiedEvent><t:TimeStamp>2024-05-14T09:21:07Z</t:TimeStamp><t:FolderId Id="F"/><t:ParentFolderId Id="P"/><t:UnreadCount>99999999999</t:UnreadCount></t:ModifiedEvent>`), "not a count"},
		{"long watermark", notification(`<t:StatusEvent><t:Watermark>` + strings.Repeat("A", MaxWatermarkLen+1) + `</t:Watermark></t:StatusEvent>`), "longer than"},
		{"utf-16", strings.Replace(notification(newMail), `encoding="utf-8"`, `encoding="utf-16"`, 1), "unsupported charset"},
		{"trailing junk", notification(newMail) + `<x/>`, "after the envelope"},
		{"entity", `<!DOCTYPE s [<!ENTITY a "aaaa">]>` + strings.Replace(notification(newMail), "W1", "&a;", 1), "invalid character entity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestParseIgnoresUnknownElements(t *testing.T) {
	body := notification(`<t:FutureEvent><t:Watermark>W0</t:Watermark></t:FutureEvent>` + newMail + `<x:NewMailEvent xmlns:x="urn:other"/>`)
	req, err := Decode([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if got := eventTypes(req.Messages[0].Notification); !slices.Equal(got, []EventType{EventNewMail}) {
		t.Fatalf("events %v, want only the NewMailEvent", got)
	}
}

func TestMap(t *testing.T) {
	tests := []struct {
		file string
		want []events.Event
	}{
		{"sendnotification_newmail.xml", []events.Event{
			{Kind: events.KindNew, Mailbox: events.Inbox, OccurredAt: time.Date(2024, 5, 14, 9, 21, 7, 0, time.UTC)},
			{Kind: events.KindSnapshot, Mailbox: events.Inbox, Unread: events.IntPtr(3), OccurredAt: time.Date(2024, 5, 14, 9, 21, 7, 0, time.UTC)},
		}},
		{"sendnotification_moved.xml", []events.Event{
			{Kind: events.KindMoved, Mailbox: otherID, FromMailbox: events.Inbox, OccurredAt: time.Date(2024, 5, 14, 9, 31, 2, 0, time.UTC)},
			{Kind: events.KindDeleted, Mailbox: events.Inbox, OccurredAt: time.Date(2024, 5, 14, 9, 31, 40, 0, time.UTC)},
			{Kind: events.KindSnapshot, Mailbox: events.Inbox, Unread: events.IntPtr(1), OccurredAt: time.Date(2024, 5, 14, 9, 31, 40, 0, time.UTC)},
		}},
		{"sendnotification_status.xml", nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := Map(parseFile(t, tt.file).Messages[0].Notification, alice)
			if len(got) != len(tt.want) {
				t.Fatalf("%d events, want %d: %+v", len(got), len(tt.want), got)
			}
			ids := map[string]bool{}
			for i, e := range got {
				w := tt.want[i]
				if e.Kind != w.Kind || e.Mailbox != w.Mailbox || e.FromMailbox != w.FromMailbox || !e.OccurredAt.Equal(w.OccurredAt) {
					t.Errorf("event %d = %s %q<-%q at %v, want %s %q<-%q at %v", i, e.Kind, e.Mailbox, e.FromMailbox, e.OccurredAt, w.Kind, w.Mailbox, w.FromMailbox, w.OccurredAt)
				}
				if (e.Unread == nil) != (w.Unread == nil) || e.Unread != nil && *e.Unread != *w.Unread {
					t.Errorf("event %d unread = %v, want %v", i, e.Unread, w.Unread)
				}
				if e.Tenant != "fabrikam.com" || e.User != "alice@fabrikam.com" || e.Source != events.SourceEWS || e.Count != 1 {
					t.Errorf("event %d identity = %+v", i, e)
				}
				if !strings.HasPrefix(e.ChangeID, "ews:") || ids[e.ChangeID] {
					t.Errorf("event %d change id %q is not a new ews: id", i, e.ChangeID)
				}
				ids[e.ChangeID] = true
				if err := e.Validate(); err != nil {
					t.Errorf("event %d: %v", i, err)
				}
			}
		})
	}
}

func TestMapChangeIDIsStableAcrossRebatching(t *testing.T) {
	alone := Map(parseFile(t, "sendnotification_newmail.xml").Messages[0].Notification, alice)
	// Exchange may resend the same events after others, from an older watermark.
	n := parseFile(t, "sendnotification_newmail.xml").Messages[0].Notification
	n.PreviousWatermark = "AQAAAOeN0NC0hgNHvU+3Bxu0kFeaqBIAAAAAAAA="
	n.Events = append(parseFile(t, "sendnotification_moved.xml").Messages[0].Notification.Events[2:3], n.Events...)
	rebatched := Map(n, alice)
	if len(rebatched) != len(alone)+1 {
		t.Fatalf("%d events, want %d", len(rebatched), len(alone)+1)
	}
	for i, e := range alone {
		if rebatched[i+1].ChangeID != e.ChangeID {
			t.Fatalf("change id of event %d moved from %q to %q", i, e.ChangeID, rebatched[i+1].ChangeID)
		}
	}
}

func TestMapEventWithoutWatermark(t *testing.T) {
	req, err := Decode([]byte(notification(strings.Replace(newMail, "<t:Watermark>W1</t:Watermark>", "", 1))))
	if err != nil {
		t.Fatal(err)
	}
	got := Map(req.Messages[0].Notification, alice)
	if len(got) != 1 || !strings.HasPrefix(got[0].ChangeID, "ews:AQAA+0/NewMailEvent/") {
		t.Fatalf("events %+v, want one with a change id from the previous watermark", got)
	}
}

func TestAnswersMatchGoldenFiles(t *testing.T) {
	tests := []struct {
		file string
		body []byte
	}{
		{"answer_ok.xml", ResultEnvelope(StatusOK)},
		{"answer_unsubscribe.xml", ResultEnvelope(StatusUnsubscribe)},
		{"answer_fault.xml", FaultEnvelope(FaultClient, `malformed SendNotification request: <bad> & "worse"`)},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			if *update {
				if err := os.WriteFile(path, tt.body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := readFile(t, tt.file); !bytes.Equal(tt.body, want) {
				t.Fatalf("answer differs from %s:\n%s\nwant:\n%s", path, tt.body, want)
			}
		})
	}
}

// The answers must be well-formed SOAP with the elements in the messages
// namespace, whatever the prefixes.
func TestAnswersAreWellFormed(t *testing.T) {
	for _, s := range []Status{StatusOK, StatusUnsubscribe} {
		var env struct {
			XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
			Body    struct {
				Result struct {
					Status string `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SubscriptionStatus"`
				} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SendNotificationResult"`
			} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
		}
		if err := xml.Unmarshal(ResultEnvelope(s), &env); err != nil {
			t.Fatal(err)
		}
		if env.Body.Result.Status != string(s) {
			t.Fatalf("SubscriptionStatus = %q, want %q", env.Body.Result.Status, s)
		}
	}
	var fault struct {
		Code   string `xml:"Body>Fault>faultcode"`
		String string `xml:"Body>Fault>faultstring"`
	}
	if err := xml.Unmarshal(FaultEnvelope(FaultServer, "a < b"), &fault); err != nil {
		t.Fatal(err)
	}
	if fault.Code != FaultServer || fault.String != "a < b" {
		t.Fatalf("fault = %+v", fault)
	}
}

func TestStaticRegistry(t *testing.T) {
	r, err := LoadRegistryFile(filepath.Join("testdata", "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := r.Lookup(context.Background(), subID)
	if err != nil || sub != alice {
		t.Fatalf("Lookup = %+v, %v; want %+v", sub, err, alice)
	}
	if _, err := r.Lookup(context.Background(), "other"); !errors.Is(err, ErrUnknownSubscription) {
		t.Fatalf("Lookup(unknown) error = %v, want ErrUnknownSubscription", err)
	}
	good := RegistryEntry{SubscriptionID: "S1", Tenant: "Fabrikam.COM", User: "bob@fabrikam.com", InboxFolderID: "F1"}
	r, err = NewStaticRegistry([]RegistryEntry{good})
	if err != nil {
		t.Fatal(err)
	}
	if sub, _ := r.Lookup(context.Background(), "S1"); sub.Tenant != "fabrikam.com" {
		t.Fatalf("tenant %q not lower-cased", sub.Tenant)
	}
	bad := []struct {
		name  string
		entry func(e *RegistryEntry)
		want  string
	}{
		{"no id", func(e *RegistryEntry) { e.SubscriptionID = "" }, "subscription_id"},
		{"bad tenant", func(e *RegistryEntry) { e.Tenant = "localhost" }, "tenant"},
		{"bad user", func(e *RegistryEntry) { e.User = "bob smith" }, "user"},
		{"no inbox", func(e *RegistryEntry) { e.InboxFolderID = "" }, "inbox_folder_id"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := good
			tt.entry(&e)
			if _, err := NewStaticRegistry([]RegistryEntry{e}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v does not name %s", err, tt.want)
			}
		})
	}
	if _, err := NewStaticRegistry([]RegistryEntry{good, good}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate accepted: %v", err)
	}
	dir := t.TempDir()
	typo := testfs.Write(t, dir, "typo.json", `{"subscriptions":[{"subscription_id":"S","tenant":"fabrikam.com","user":"a@fabrikam.com","inbox_folder":"F"}]}`)
	if _, err := LoadRegistryFile(typo); err == nil || !strings.Contains(err.Error(), "inbox_folder") {
		t.Fatalf("unknown field accepted: %v", err)
	}
	if _, err := LoadRegistryFile(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("missing file accepted")
	}
}
