package events

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func testKeyer(t *testing.T, key string) *Keyer {
	t.Helper()
	k, err := NewKeyer([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSubjectHasNoRawAddress(t *testing.T) {
	k := testKeyer(t, "0123456789abcdef0123456789abcdef")
	subject := k.Subject("fabrikam.com", "Alice.Smith+tag@fabrikam.com")
	if !regexp.MustCompile(`^mail\.fabrikam_com\.[a-z2-7]{26}$`).MatchString(subject) {
		t.Fatalf("subject %q is not mail.<tenant>.<26 base32>", subject)
	}
	if strings.Contains(subject, "alice") || strings.Contains(subject, "@") {
		t.Fatalf("subject %q leaks the address", subject)
	}
	if k.Subject("fabrikam.com", "alice.smith+tag@FABRIKAM.com") != subject {
		t.Fatal("addresses differing only in case give different subjects")
	}
	if k.UserKey("fabrikam.com", "bob@fabrikam.com") == k.UserKey("fabrikam.com", "alice.smith+tag@fabrikam.com") {
		t.Fatal("two users share a key")
	}
	other := testKeyer(t, "another key of sixteen bytes or more")
	if other.Subject("fabrikam.com", "Alice.Smith+tag@fabrikam.com") == subject {
		t.Fatal("the subject does not depend on the key")
	}
}

func TestMsgIDIsTheSourceIdentity(t *testing.T) {
	k := testKeyer(t, "0123456789abcdef0123456789abcdef")
	a := validEvent()
	a.Normalize()
	b := a
	b.OccurredAt = b.OccurredAt.Add(1) // a retry may carry another timestamp
	if k.MsgID(&a) != k.MsgID(&b) {
		t.Fatal("a retry of the same change got another id")
	}
	c := a
	c.ChangeID = "c2"
	d := a
	d.Source = SourceDovecotOX
	if k.MsgID(&a) == k.MsgID(&c) || k.MsgID(&a) == k.MsgID(&d) {
		t.Fatal("different changes share an id")
	}
}

func TestNewKeyerRejectsShortKey(t *testing.T) {
	if _, err := NewKeyer([]byte("short")); !errors.Is(err, ErrShortKey) {
		t.Fatalf("err = %v", err)
	}
}

func TestPartitionOf(t *testing.T) {
	tests := []struct {
		subject string
		want    int
		ok      bool
	}{
		{"mail.3.fabrikam_com.abc", 3, true},
		{"mail.12.t.u", 12, true},
		{"mail.t.u", 0, false},
		{"mail.x.t.u", 0, false},
		{"push.1.t.u", 0, false},
		{"mail..t.u", 0, false},
	}
	for _, tt := range tests {
		got, ok := PartitionOf(tt.subject)
		if got != tt.want || ok != tt.ok {
			t.Errorf("PartitionOf(%q) = %d, %v", tt.subject, got, ok)
		}
	}
}
