package ews

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// goldenSubscription is the subscription of the golden request.
var goldenSubscription = PushSubscription{Mailbox: "alice@fabrikam.com", Folder: "inbox", EventTypes: SubscribedEventTypes(),
	Watermark: "AQAAAOeN0NC0hgNHvU+3Bxu0kFeyqBIAAAAAAAA=", StatusFrequency: 30, URL: "https://push.fabrikam.com/v1/ews?key=k3y&x=<1>"}

func TestSubscribeRequestGolden(t *testing.T) {
	got := SubscribeRequest(goldenSubscription, true)
	path := filepath.Join("testdata", "subscribe_request.xml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, "subscribe_request.xml"); !bytes.Equal(got, want) {
		t.Fatalf("request:\n%s\nwant:\n%s", got, want)
	}
}

func TestSubscribeRequestReadsBack(t *testing.T) {
	fresh := goldenSubscription
	fresh.Watermark, fresh.Mailbox, fresh.StatusFrequency = "", `"o'hara&<sons>"@fabrikam.com`, 1440
	tests := []struct {
		name        string
		sub         PushSubscription
		impersonate bool
	}{
		{"from a watermark, impersonating", goldenSubscription, true},
		{"afresh, odd address", fresh, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readSubscribeRequest(SubscribeRequest(tt.sub, tt.impersonate))
			if err != nil {
				t.Fatal(err)
			}
			want := subscribeCall{mailbox: tt.sub.Mailbox, folder: tt.sub.Folder, watermark: tt.sub.Watermark,
				frequency: tt.sub.StatusFrequency, url: tt.sub.URL, version: RequestServerVersion,
				eventTypes: []string{"NewMailEvent", "ModifiedEvent", "DeletedEvent", "MovedEvent"}}
			if tt.impersonate {
				want.impersonated = tt.sub.Mailbox
			}
			if !got.equal(want) {
				t.Fatalf("read back %+v\nwant      %+v", got, want)
			}
		})
	}
}

func TestSubscribedEventTypesAreMapped(t *testing.T) {
	// Every event type asked for is one Map reads, and those are all.
	want := []EventType{EventDeleted, EventModified, EventMoved, EventNewMail}
	got := slices.Sorted(slices.Values(SubscribedEventTypes()))
	if !slices.Equal(got, want) {
		t.Fatalf("event types %v, want %v", got, want)
	}
}

func TestDecodeSubscribeGolden(t *testing.T) {
	tests := []struct {
		file string
		want SubscribeAnswer
	}{
		{"subscribe_success.xml", SubscribeAnswer{ResponseClass: ClassSuccess, ResponseCode: CodeNoError,
			SubscriptionID: subID, Watermark: "AQAAAOeN0NC0hgNHvU+3Bxu0kFeyqBIAAAAAAAA="}},
		{"subscribe_invalid_watermark.xml", SubscribeAnswer{ResponseClass: ClassError, ResponseCode: CodeInvalidWatermark,
			MessageText: "The watermark isn't in the mailbox's event table."}},
		{"subscribe_busy_message.xml", SubscribeAnswer{ResponseClass: ClassError, ResponseCode: CodeServerBusy, BackOff: 2500 * time.Millisecond,
			MessageText: "The server can't service this request right now. Try again later."}},
		{"getfolder_busy_fault.xml", SubscribeAnswer{Fault: true, ResponseClass: ClassError, ResponseCode: CodeServerBusy, BackOff: time.Second,
			MessageText: "The server cannot service this request right now. Try again later."}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := DecodeSubscribe(readFile(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Fatalf("answer %+v\nwant   %+v", *got, tt.want)
			}
		})
	}
}

func TestDecodeSubscribeErrors(t *testing.T) {
	response := func(messages string) string {
		return `<s:Envelope xmlns:s="` + SOAPNamespace + `"><s:Body><m:SubscribeResponse xmlns:m="` + MessagesNamespace + `" xmlns:t="` + TypesNamespace + `">` +
			`<m:ResponseMessages>` + messages + `</m:ResponseMessages></m:SubscribeResponse></s:Body></s:Envelope>`
	}
	success := func(inner string) string {
		return `<m:SubscribeResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>` + inner + `</m:SubscribeResponseMessage>`
	}
	long := string(bytes.Repeat([]byte("A"), MaxWatermarkLen+1))
	tests := []struct {
		name, body string
	}{
		{"not XML", "Service Unavailable"},
		{"another operation", readAsString(t, "getfolder_success.xml")},
		{"no message", response(``)},
		{"two messages", response(success(`<m:SubscriptionId>a</m:SubscriptionId>`) + success(`<m:SubscriptionId>b</m:SubscriptionId>`))},
		{"no subscription id", response(success(`<m:Watermark>AQAA</m:Watermark>`))},
		{"subscription id in the types namespace", response(success(`<t:SubscriptionId>a</t:SubscriptionId>`))},
		{"empty subscription id", response(success(`<m:SubscriptionId> </m:SubscriptionId>`))},
		{"subscription id with a space", response(success(`<m:SubscriptionId>a b</m:SubscriptionId>`))},
		{"watermark too long", response(success(`<m:SubscriptionId>a</m:SubscriptionId><m:Watermark>` + long + `</m:Watermark>`))},
		{"unknown class", response(`<m:SubscribeResponseMessage ResponseClass="Fine"><m:ResponseCode>NoError</m:ResponseCode></m:SubscribeResponseMessage>`)},
		{"error without code", response(`<m:SubscribeResponseMessage ResponseClass="Error"/>`)},
		{"bad back-off", response(`<m:SubscribeResponseMessage ResponseClass="Error"><m:ResponseCode>ErrorServerBusy</m:ResponseCode><m:MessageXml><t:Value Name="BackOffMilliseconds">later</t:Value></m:MessageXml></m:SubscribeResponseMessage>`)},
		{"fault without code", `<s:Envelope xmlns:s="` + SOAPNamespace + `"><s:Body><s:Fault><faultstring>x</faultstring></s:Fault></s:Body></s:Envelope>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a, err := DecodeSubscribe([]byte(tt.body)); !errors.Is(err, ErrMalformedSubscribeAnswer) || a != nil {
				t.Fatalf("got %+v, %v", a, err)
			}
		})
	}
}

func readAsString(t *testing.T, name string) string {
	t.Helper()
	return string(readFile(t, name))
}
