package imap

import (
	"bufio"
	"bytes"
	"testing"

	goimap "github.com/emersion/go-imap"
)

// readResps reads the responses of data, at most max, until the first
// error.
func readResps(data []byte, max int) []goimap.Resp {
	r := goimap.NewReader(bufio.NewReader(bytes.NewReader(data)))
	var out []goimap.Resp
	for range max {
		resp, err := goimap.ReadResp(r)
		if err != nil {
			break
		}
		out = append(out, resp)
	}
	return out
}

func TestParseUntagged(t *testing.T) {
	cases := []struct {
		line string
		want untagged
	}{
		{"* 23 EXISTS\r\n", untagged{kind: untaggedExists, n: 23}},
		{"* 0 exists\r\n", untagged{kind: untaggedExists}},
		{"* 2 RECENT\r\n", untagged{kind: untaggedRecent, n: 2}},
		{"* 7 EXPUNGE\r\n", untagged{kind: untaggedExpunge, n: 7}},
		{"* 3 FETCH (FLAGS (\\Seen) MODSEQ (12))\r\n", untagged{kind: untaggedFetch, n: 3}},
		{"* 3 EXISTS extra\r\n", untagged{}},
		{"* SEARCH\r\n", untagged{kind: untaggedSearch}},
		{"* SEARCH 2 3 6\r\n", untagged{kind: untaggedSearch, n: 3}},
		{"* SEARCH 2 5 (MODSEQ 917162500)\r\n", untagged{kind: untaggedSearch, n: 2}},
		{"* SEARCH 2 x\r\n", untagged{kind: untaggedMalformed}},
		{"* SEARCH (MODSEQ 1) 2\r\n", untagged{kind: untaggedMalformed}},
		{"* SEARCH 4294967296\r\n", untagged{kind: untaggedMalformed}},
		{"* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n", untagged{kind: untaggedESearch, n: 3}},
		{"* ESEARCH (TAG \"A1\") UID COUNT 0\r\n", untagged{kind: untaggedESearch}},
		{"* ESEARCH COUNT 17 ALL 1:17\r\n", untagged{kind: untaggedESearch, n: 17}},
		{"* esearch count 5\r\n", untagged{kind: untaggedESearch, n: 5}},
		{"* ESEARCH (TAG \"A1\")\r\n", untagged{kind: untaggedMalformed}},
		{"* ESEARCH COUNT\r\n", untagged{kind: untaggedMalformed}},
		{"* ESEARCH COUNT x\r\n", untagged{kind: untaggedMalformed}},
		{"* ESEARCH COUNT 1 COUNT 2\r\n", untagged{kind: untaggedMalformed}},
		{"* ESEARCH (1 2) COUNT 1\r\n", untagged{kind: untaggedESearch, n: 1}},
		{"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n", untagged{kind: untaggedUIDValidity, n: 3857529045}},
		{"* OK [UIDVALIDITY x] UIDs valid\r\n", untagged{}},
		{"* OK [UIDNEXT 4392] Predicted next UID\r\n", untagged{}},
		{"* OK Still here\r\n", untagged{}},
		{"* BYE Autologout; idle for too long\r\n", untagged{kind: untaggedBye}},
		{"* FLAGS (\\Answered \\Seen)\r\n", untagged{}},
		{"* CAPABILITY IMAP4rev1 IDLE\r\n", untagged{}},
		{"+ idling\r\n", untagged{}},
		{"A1 OK done\r\n", untagged{}},
		{"A1 BYE odd\r\n", untagged{}},
	}
	for _, tc := range cases {
		resps := readResps([]byte(tc.line), 1)
		if len(resps) != 1 {
			t.Fatalf("%q does not read as a response", tc.line)
		}
		if got := parseUntagged(resps[0]); got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

func TestUntaggedChanges(t *testing.T) {
	for kind, want := range map[untaggedKind]bool{
		untaggedExists: true, untaggedRecent: true, untaggedExpunge: true, untaggedFetch: true,
		untaggedOther: false, untaggedSearch: false, untaggedESearch: false, untaggedUIDValidity: false,
		untaggedBye: false, untaggedMalformed: false,
	} {
		if got := (untagged{kind: kind}).changes(); got != want {
			t.Errorf("kind %d changes %v, want %v", kind, got, want)
		}
	}
}

// FuzzUntagged reads arbitrary server output as responses and parses
// each: no panic, and a SEARCH count never exceeds the response's fields.
// Seeds: testdata/fuzz/FuzzUntagged.
func FuzzUntagged(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, resp := range readResps(data, 64) {
			u := parseUntagged(resp)
			if u.kind < untaggedOther || u.kind > untaggedMalformed {
				t.Fatalf("kind %d", u.kind)
			}
			if d, ok := resp.(*goimap.DataResp); ok && u.kind == untaggedSearch && int(u.n) >= len(d.Fields) {
				t.Fatalf("SEARCH count %d of %d fields", u.n, len(d.Fields))
			}
			if _, ok := resp.(*goimap.DataResp); !ok && u.kind != untaggedOther && u.kind != untaggedBye && u.kind != untaggedUIDValidity {
				t.Fatalf("kind %d of %T", u.kind, resp)
			}
		}
	})
}
