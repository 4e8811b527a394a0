package sources

import "testing"

func TestURLKey(t *testing.T) {
	tests := []struct {
		name, secret, given string
		set, matches        bool
	}{
		{"no key", "", "", false, false},
		{"no key, something given", "", "k", false, false},
		{"right", "s3cret", "s3cret", true, true},
		{"wrong", "s3cret", "s3cre", true, false},
		{"missing", "s3cret", "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := NewURLKey(tt.secret)
			if k.Set() != tt.set || k.Matches(tt.given) != tt.matches {
				t.Fatalf("Set %v Matches %v, want %v %v", k.Set(), k.Matches(tt.given), tt.set, tt.matches)
			}
		})
	}
}
