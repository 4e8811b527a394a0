package jsonscan

import (
	"strings"
	"testing"
	"time"
)

func TestScalars(t *testing.T) {
	for _, tt := range []struct {
		in   string
		read func(*Scanner) (any, bool)
		want any
		ok   bool
	}{
		{`"fabrikam.com"`, str, "fabrikam.com", true},
		{`"a\"b"`, str, "", false},
		{`"été"`, str, "", false}, // not ASCII: the library's
		{"\"a\tb\"", str, "", false},
		{`"open`, str, "", false},
		{`42,`, integer, 42, true},
		{`-7}`, integer, -7, true},
		{`0 `, integer, 0, true},
		{`01`, integer, 0, false},
		{`1.5`, integer, 0, false},
		{`1e3`, integer, 0, false},
		{`-`, integer, 0, false},
		{`1234567890123456`, integer, 0, false}, // more than MaxDigits
		{`4294967295`, unsigned, uint32(4294967295), true},
		{`4294967296`, unsigned, uint32(0), false},
		{`-0`, unsigned, uint32(0), false}, // as encoding/json
		{`"2025-01-31T09:30:00Z"`, when, time.Date(2025, 1, 31, 9, 30, 0, 0, time.UTC), true},
		{`"31/01/2025"`, when, time.Time{}, false},
	} {
		s := New([]byte(tt.in))
		got, ok := tt.read(&s)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("%s: got %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func str(s *Scanner) (any, bool) {
	var v string
	ok := s.StringInto(&v)
	return v, ok
}

func integer(s *Scanner) (any, bool) {
	var v int
	ok := s.IntInto(&v)
	return v, ok
}

func unsigned(s *Scanner) (any, bool) {
	var v uint32
	ok := s.Uint32Into(&v)
	return v, ok
}

func when(s *Scanner) (any, bool) {
	var v time.Time
	ok := s.TimeInto(&v)
	return v.UTC(), ok
}

func TestTokens(t *testing.T) {
	s := New([]byte(" \t\n{ null ,\r\n}  "))
	s.Space()
	if !s.Eat('{') || s.Eat('{') {
		t.Fatal("Eat")
	}
	s.Space()
	if !s.Null() || s.Null() {
		t.Fatal("Null")
	}
	s.Space()
	if !s.Peek(',') || !s.Eat(',') {
		t.Fatal("Peek")
	}
	s.Space()
	if !s.Eat('}') || s.Done() || !s.End() || !s.Done() {
		t.Fatal("End")
	}
	var known string
	if k := New([]byte(`"INBOX"`)); !k.KnownString(&known, "INBOX") || known != "INBOX" {
		t.Fatal("KnownString")
	}
}

func TestObject(t *testing.T) {
	for _, tt := range []struct {
		in   string
		keys string
		ok   bool
	}{
		{`{}`, "", true},
		{`{ "a" : 1 , "b":2 }`, "a,b", true},
		{`{"a":1,}`, "a", false},
		{`{"a" 1}`, "", false},
		{`{"a":1 "b":2}`, "a", false},
		{`{"a":x}`, "", false}, // the value refused
		{`[]`, "", false},
	} {
		s := New([]byte(tt.in))
		var keys []string
		ok := s.Object(func(key []byte) bool {
			var n int
			if !s.IntInto(&n) {
				return false
			}
			keys = append(keys, string(key))
			return true
		})
		if ok != tt.ok || strings.Join(keys, ",") != tt.keys {
			t.Errorf("%s: keys %v, %v; want %s, %v", tt.in, keys, ok, tt.keys, tt.ok)
		}
	}
}
