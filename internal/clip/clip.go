// Package clip shortens text that came from outside (a client's field, a
// peer's error message) before it goes into an error or a log line.
package clip

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxText is the most of a text that Text keeps, in bytes.
const MaxText = 512

// Cut returns s when it has at most max bytes, and otherwise its first
// max bytes or fewer, cut on a character boundary, with "…" added.
func Cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Text keeps text taken from an answer (an error code or message, a field
// a peer got wrong) fit for an error or a log: trimmed, valid UTF-8,
// control characters (line breaks too) made spaces, and Cut to MaxText
// bytes.
func Text(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD"))
	return Cut(s, MaxText)
}
