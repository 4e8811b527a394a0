package ews

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGetFolderRequestGolden(t *testing.T) {
	got := GetFolderRequest("alice@fabrikam.com", "inbox", true)
	path := filepath.Join("testdata", "getfolder_request.xml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, "getfolder_request.xml"); !bytes.Equal(got, want) {
		t.Fatalf("request:\n%s\nwant:\n%s", got, want)
	}
}

func TestGetFolderRequestReadsBack(t *testing.T) {
	tests := []struct {
		mailbox, folder string
		impersonate     bool
	}{
		{"alice@fabrikam.com", "inbox", false},
		{`"o'hara&<sons>"@fabrikam.com`, "sentitems", true},
	}
	for _, tt := range tests {
		t.Run(tt.mailbox, func(t *testing.T) {
			r, err := readGetFolderRequest(GetFolderRequest(tt.mailbox, tt.folder, tt.impersonate))
			if err != nil {
				t.Fatal(err)
			}
			want := getFolderCall{mailbox: tt.mailbox, folder: tt.folder, version: RequestServerVersion}
			if tt.impersonate {
				want.impersonated = tt.mailbox
			}
			if r != want {
				t.Fatalf("read back %+v, want %+v", r, want)
			}
		})
	}
}

func TestDecodeGetFolderGolden(t *testing.T) {
	tests := []struct {
		file string
		want FolderAnswer
	}{
		{"getfolder_success.xml", FolderAnswer{ResponseClass: ClassSuccess, ResponseCode: CodeNoError, UnreadCount: 5,
			FolderID: "AAMkADk1ZGY0ZjNmLTJmZjMtNDg4Zi1hYzQ1LTBmMmRiOTQ2ZGE5NAAuAAAAAACJhUi+Ncr4QbV9dCaXEVhHAQCdQw6nHzAxRpkuT1MdYAp0AAAAAAEMAAA="}},
		{"getfolder_nonexistent.xml", FolderAnswer{ResponseClass: ClassError, ResponseCode: CodeNonExistentMailbox,
			MessageText: "The SMTP address has no mailbox associated with it."}},
		{"getfolder_busy_fault.xml", FolderAnswer{Fault: true, ResponseClass: ClassError, ResponseCode: CodeServerBusy,
			MessageText: "The server cannot service this request right now. Try again later.", BackOff: time.Second}},
		{"getfolder_busy_message.xml", FolderAnswer{ResponseClass: ClassError, ResponseCode: CodeServerBusy, BackOff: 1500 * time.Millisecond,
			MessageText: "The server cannot service this request right now. Try again later., This operation exceeds the throttling budget for policy part 'ConcurrentSyncCalls', policy value '5', Budget type: 'Ews'. Suggested backoff time 1500 ms."}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := DecodeGetFolder(readFile(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Fatalf("answer %+v\nwant   %+v", *got, tt.want)
			}
		})
	}
}

func TestDecodeGetFolderErrors(t *testing.T) {
	body := func(inner string) string {
		return `<s:Envelope xmlns:s="` + SOAPNamespace + `"><s:Body>` + inner + `</s:Body></s:Envelope>`
	}
	response := func(messages string) string {
		return body(`<m:GetFolderResponse xmlns:m="` + MessagesNamespace + `" xmlns:t="` + TypesNamespace + `"><m:ResponseMessages>` + messages + `</m:ResponseMessages></m:GetFolderResponse>`)
	}
	success := func(folders string) string {
		return `<m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Folders>` + folders + `</m:Folders></m:GetFolderResponseMessage>`
	}
	folder := func(count string) string {
		return `<t:Folder><t:FolderId Id="x"/><t:UnreadCount>` + count + `</t:UnreadCount></t:Folder>`
	}
	tests := []struct {
		name, body string
	}{
		{"not XML", "Service Unavailable"},
		{"not SOAP", `<html><body>503</body></html>`},
		{"empty body", body(``)},
		{"other operation", body(`<m:GetItemResponse xmlns:m="` + MessagesNamespace + `"/>`)},
		{"no message", response(``)},
		{"two messages", response(success(folder("1")) + success(folder("2")))},
		{"no folder", response(success(``))},
		{"two folders", response(success(folder("1") + folder("2")))},
		{"no count", response(success(`<t:Folder><t:FolderId Id="x"/></t:Folder>`))},
		{"negative count", response(success(folder("-1")))},
		{"huge count", response(success(folder("99999999999")))},
		{"count not a number", response(success(folder("five")))},
		{"folder id with a space", response(success(`<t:Folder><t:FolderId Id="a b"/><t:UnreadCount>1</t:UnreadCount></t:Folder>`))},
		{"folder in another namespace", response(success(`<Folder><UnreadCount>1</UnreadCount></Folder>`))},
		{"unknown class", response(`<m:GetFolderResponseMessage ResponseClass="Fine"><m:ResponseCode>NoError</m:ResponseCode></m:GetFolderResponseMessage>`)},
		{"error without code", response(`<m:GetFolderResponseMessage ResponseClass="Error"><m:MessageText>x</m:MessageText></m:GetFolderResponseMessage>`)},
		{"code with spaces", response(`<m:GetFolderResponseMessage ResponseClass="Error"><m:ResponseCode>Error Access Denied</m:ResponseCode></m:GetFolderResponseMessage>`)},
		{"bad back-off", response(`<m:GetFolderResponseMessage ResponseClass="Error"><m:ResponseCode>ErrorServerBusy</m:ResponseCode><m:MessageXml><t:Value Name="BackOffMilliseconds">soon</t:Value></m:MessageXml></m:GetFolderResponseMessage>`)},
		{"fault without code", body(`<s:Fault><faultstring>x</faultstring></s:Fault>`)},
		{"other charset", `<?xml version="1.0" encoding="iso-8859-1"?>` + response(success(folder("1")))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a, err := DecodeGetFolder([]byte(tt.body)); !errors.Is(err, ErrMalformedAnswer) || a != nil {
				t.Fatalf("got %+v, %v", a, err)
			}
		})
	}
}

func TestDecodeGetFolderFaultCodes(t *testing.T) {
	fault := func(code, detail string) []byte {
		return []byte(`<s:Envelope xmlns:s="` + SOAPNamespace + `"><s:Body><s:Fault><faultcode>` + code + `</faultcode><faultstring>reason</faultstring>` +
			`<detail>` + detail + `</detail></s:Fault></s:Body></s:Envelope>`)
	}
	tests := []struct {
		name string
		body []byte
		code string
	}{
		{"prefixed faultcode", fault("a:ErrorInvalidRequest", ""), "ErrorInvalidRequest"},
		{"SOAP client fault", fault("s:Client", ""), "Client"},
		{"detail wins", fault("s:Server", `<e:ResponseCode xmlns:e="`+ErrorsNamespace+`">ErrorSchemaValidation</e:ResponseCode>`), "ErrorSchemaValidation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := DecodeGetFolder(tt.body)
			if err != nil || !a.Fault || a.ResponseClass != ClassError || a.ResponseCode != tt.code || a.MessageText != "reason" {
				t.Fatalf("got %+v, %v", a, err)
			}
		})
	}
}

func TestClipAnswer(t *testing.T) {
	long := strings.Repeat("é", maxAnswerText)
	if got := clipAnswer(long); len(got) > maxAnswerText+len("…") || !strings.HasSuffix(got, "…") {
		t.Fatalf("clipped to %d bytes", len(got))
	}
	if got := clipAnswer(" a\r\n\tb\x00c "); got != "a b c" {
		t.Fatalf("got %q", got)
	}
}
