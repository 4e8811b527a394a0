package imap

import (
	"strings"

	goimap "github.com/emersion/go-imap"
)

// untaggedKind is what an untagged server response means to the watcher.
type untaggedKind int

// The untagged responses the watcher tells apart.
const (
	// untaggedOther is any response the watcher has no use for (FLAGS,
	// CAPABILITY, OK [PERMANENTFLAGS ...], a continuation, ...).
	untaggedOther untaggedKind = iota
	// untaggedExists is "* n EXISTS": the mailbox holds n messages.
	untaggedExists
	// untaggedRecent is "* n RECENT".
	untaggedRecent
	// untaggedExpunge is "* n EXPUNGE": message n is gone.
	untaggedExpunge
	// untaggedFetch is "* n FETCH (...)": message n changed (flags).
	untaggedFetch
	// untaggedSearch is "* SEARCH n1 n2 ...": n is how many numbers.
	untaggedSearch
	// untaggedESearch is RFC 4731's "* ESEARCH [(TAG "t")] [UID] COUNT n
	// ...": n is the COUNT.
	untaggedESearch
	// untaggedUIDValidity is "* OK [UIDVALIDITY n]".
	untaggedUIDValidity
	// untaggedBye is "* BYE": the server is closing the connection.
	untaggedBye
	// untaggedMalformed is a SEARCH or ESEARCH response the watcher
	// cannot read: a count taken from it would be wrong.
	untaggedMalformed
)

// untagged is an untagged response as the watcher reads it.
type untagged struct {
	kind untaggedKind
	// n is the number the response carries (see the kinds).
	n uint32
}

// changes reports whether the response tells that the mailbox changed, so
// that its unseen count may have: a message arrived (EXISTS, RECENT), went
// (EXPUNGE) or had its flags changed (FETCH).
func (u untagged) changes() bool {
	switch u.kind {
	case untaggedExists, untaggedRecent, untaggedExpunge, untaggedFetch:
		return true
	}
	return false
}

// parseUntagged reads an untagged response. It never fails: what it cannot
// use is untaggedOther, and what it should have been able to read but
// could not is untaggedMalformed.
func parseUntagged(resp goimap.Resp) untagged {
	switch resp := resp.(type) {
	case *goimap.StatusResp:
		return parseUntaggedStatus(resp)
	case *goimap.DataResp:
		if resp.Tag != "*" {
			return untagged{}
		}
		return parseUntaggedData(resp)
	}
	return untagged{}
}

// parseUntaggedStatus reads "* BYE ..." and "* OK [UIDVALIDITY n]".
func parseUntaggedStatus(resp *goimap.StatusResp) untagged {
	if resp.Tag != "*" {
		return untagged{}
	}
	switch {
	case resp.Type == goimap.StatusRespBye:
		return untagged{kind: untaggedBye}
	case resp.Type == goimap.StatusRespOk && strings.EqualFold(string(resp.Code), string(goimap.CodeUidValidity)):
		if len(resp.Arguments) != 1 {
			return untagged{}
		}
		n, err := goimap.ParseNumber(resp.Arguments[0])
		if err != nil {
			return untagged{}
		}
		return untagged{kind: untaggedUIDValidity, n: n}
	}
	return untagged{}
}

// parseUntaggedData reads the data responses the watcher uses.
func parseUntaggedData(resp *goimap.DataResp) untagged {
	f := resp.Fields
	if len(f) >= 2 {
		// "* n EXISTS" and its kin: a number, then the name.
		if name, ok := f[1].(string); ok {
			if n, err := goimap.ParseNumber(f[0]); err == nil {
				return numbered(strings.ToUpper(name), n, len(f))
			}
		}
	}
	if len(f) == 0 {
		return untagged{}
	}
	name, ok := f[0].(string)
	if !ok {
		return untagged{}
	}
	switch strings.ToUpper(name) {
	case "SEARCH":
		return parseSearch(f[1:])
	case "ESEARCH":
		return parseESearch(f[1:])
	}
	return untagged{}
}

// numbered reads "* n NAME ...", of fields fields in all.
func numbered(name string, n uint32, fields int) untagged {
	switch name {
	case "EXISTS", "RECENT", "EXPUNGE":
		if fields != 2 {
			return untagged{}
		}
		switch name {
		case "EXISTS":
			return untagged{kind: untaggedExists, n: n}
		case "RECENT":
			return untagged{kind: untaggedRecent, n: n}
		}
		return untagged{kind: untaggedExpunge, n: n}
	case "FETCH":
		return untagged{kind: untaggedFetch, n: n}
	}
	return untagged{}
}

// parseSearch reads the numbers of "* SEARCH n1 n2 ...". A parenthesised
// list after them (RFC 7162's "(MODSEQ m)") is not a message.
func parseSearch(fields []any) untagged {
	var n uint32
	for i, f := range fields {
		if _, list := f.([]any); list && i == len(fields)-1 {
			break
		}
		if _, err := goimap.ParseNumber(f); err != nil {
			return untagged{kind: untaggedMalformed}
		}
		n++
	}
	return untagged{kind: untaggedSearch, n: n}
}

// parseESearch reads the COUNT of "* ESEARCH [(TAG "t")] [UID] name value
// ...": the search correlator and UID are optional, and every other
// result (MIN, MAX, ALL, MODSEQ) is a name and one value.
func parseESearch(fields []any) untagged {
	if len(fields) > 0 {
		if _, correlator := fields[0].([]any); correlator {
			fields = fields[1:]
		}
	}
	if len(fields) > 0 {
		if s, ok := fields[0].(string); ok && strings.EqualFold(s, "UID") {
			fields = fields[1:]
		}
	}
	found := false
	var count uint32
	for len(fields) > 0 {
		name, ok := fields[0].(string)
		if !ok || len(fields) < 2 {
			return untagged{kind: untaggedMalformed}
		}
		if strings.EqualFold(name, "COUNT") {
			n, err := goimap.ParseNumber(fields[1])
			if err != nil || found {
				return untagged{kind: untaggedMalformed}
			}
			found, count = true, n
		}
		fields = fields[2:]
	}
	if !found {
		return untagged{kind: untaggedMalformed}
	}
	return untagged{kind: untaggedESearch, n: count}
}
