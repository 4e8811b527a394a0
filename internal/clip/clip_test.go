package clip

import (
	"strings"
	"testing"
)

func TestText(t *testing.T) {
	long := strings.Repeat("a", MaxText-1) + "é" + "tail"
	tests := []struct{ in, want string }{
		{"  InvalidAuthenticationToken \r\n", "InvalidAuthenticationToken"},
		{"line one\nline two\ttab", "line one line two tab"},
		{"bad \xff byte", "bad \uFFFD byte"},
		{long, strings.Repeat("a", MaxText-1) + "…"},
	}
	for _, tt := range tests {
		if got := Text(tt.in); got != tt.want {
			t.Errorf("Text(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 8, "short"},
		{"exactly8", 8, "exactly8"},
		{"ninechars", 8, "ninechar…"},
		{"ab€cd", 3, "ab…"}, // € is 3 bytes: not split
		{"€", 1, "…"},
	}
	for _, tt := range tests {
		if got := Cut(tt.in, tt.max); got != tt.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}
