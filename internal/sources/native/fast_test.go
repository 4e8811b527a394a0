package native

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestParseFastAgreesWithDecode checks that the fast reader takes the usual
// bodies, leaves the others to encoding/json, and that both read the same
// items from every body it takes.
func TestParseFastAgreesWithDecode(t *testing.T) {
	full := `{"v":1,"tenant":"fabrikam.com","user":"jürgen@bücher.example","mailbox":"Entwürfe","from_mailbox":"INBOX","kind":"moved","unread":0,"count":12,"change_id":"c-1","uidvalidity":4294967,"uid":999999999,"occurred_at":"2025-01-31T09:30:00+01:00"}`
	tests := []struct {
		name, media, body string
		fast              bool
	}{
		{"single", MediaJSON, good, true},
		{"full", MediaJSON, full, true},
		{"spaced", MediaJSON, " \r\n\t{ \"user\" : \"a@b.c\" ,\n\"kind\":\"new\" , \"unread\" : -3 }\n ", true},
		{"empty object", MediaJSON, `{}`, true},
		{"array", MediaJSON, "[" + good + ",\n" + full + "]", true},
		{"array spaced", MediaJSON, "[ " + good + " , " + good + " ]\n", true},
		{"ndjson", MediaNDJSON, good + "\n\n" + full + "\r\n", true},
		{"ndjson run together", MediaNDJSON, good + good, true},
		{"duplicate key", MediaJSON, `{"user":"a@b.c","user":"d@e.f","unread":1,"unread":2}`, true},
		{"bad time", MediaJSON, `{"occurred_at":"yesterday"}`, true},
		{"negative zero", MediaJSON, `{"count":-0,"unread":-0}`, true},
		{"escape", MediaJSON, `{"user":"a\u0040b.c"}`, false},
		{"escaped key", MediaJSON, `{"us\u0065r":"a@b.c"}`, false},
		{"control", MediaJSON, "{\"user\":\"a\tb\"}", false},
		{"invalid utf8", MediaJSON, "{\"user\":\"a\xffb\"}", false},
		{"folded key", MediaJSON, `{"User":"a@b.c"}`, false},
		{"unknown key", MediaJSON, `{"colour":"red"}`, false},
		{"null", MediaJSON, `{"unread":null}`, false},
		{"null event", MediaJSON, `[null]`, false},
		{"bool", MediaJSON, `{"unread":true}`, false},
		{"float", MediaJSON, `{"unread":1.0}`, false},
		{"exponent", MediaJSON, `{"count":1e3}`, false},
		{"leading zero", MediaJSON, `{"count":01}`, false},
		{"big", MediaJSON, `{"uid":4294967296}`, false},
		{"negative uid", MediaJSON, `{"uid":-1}`, false},
		{"string number", MediaJSON, `{"count":"1"}`, false},
		{"number string", MediaJSON, `{"user":1}`, false},
		{"empty array", MediaJSON, `[]`, false},
		{"trailing comma", MediaJSON, `[{},]`, false},
		{"two documents", MediaJSON, `{}{}`, false},
		{"unclosed", MediaNDJSON, `{"user":"a@b.c"`, false},
		{"unclosed number", MediaNDJSON, `{"count":1`, false},
		{"array in ndjson", MediaNDJSON, `[{}]`, false},
		{"garbage after", MediaNDJSON, good + "\nx", false},
		{"empty", MediaNDJSON, " \n", false},
		{"too many", MediaNDJSON, strings.Repeat(good+"\n", 4), false},
		{"other media", "text/plain", good, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast := checkFastAgrees(t, []byte(tt.body), tt.media, 3); fast != tt.fast {
				t.Fatalf("read fast: %v, want %v", fast, tt.fast)
			}
		})
	}
}

// checkFastAgrees reads body with both readers and fails unless the fast
// one either declines or gives what encoding/json gives. It reports
// whether the fast reader took the body.
func checkFastAgrees(t *testing.T, body []byte, media string, max int) bool {
	t.Helper()
	fast, ok := parseFast(body, media, max)
	if !ok {
		return false
	}
	slow, err := decode(body, media, max)
	if err != nil {
		t.Fatalf("the fast reader took a body encoding/json refuses: %v", err)
	}
	if len(fast) != len(slow) {
		t.Fatalf("fast reader: %d items, encoding/json: %d", len(fast), len(slow))
	}
	for i := range fast {
		if !reflect.DeepEqual(fast[i].Event, slow[i].Event) || fmt.Sprint(fast[i].Err) != fmt.Sprint(slow[i].Err) {
			t.Fatalf("item %d: fast reader %+v, encoding/json %+v", i, fast[i], slow[i])
		}
	}
	return true
}
