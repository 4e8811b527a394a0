package events

import (
	"crypto/hmac"
	"crypto/sha256"
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

// referenceMAC is the keyed hash as the key scheme defines it: HMAC-SHA256
// of the parts, each followed by a zero byte.
func referenceMAC(key string, parts ...string) []byte {
	h := hmac.New(sha256.New, []byte(key))
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

// TestNamesFollowTheKeyScheme pins every derived name to the scheme, so
// that a faster implementation cannot move a user's data.
func TestNamesFollowTheKeyScheme(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef"
	k := testKeyer(t, key)
	tests := []struct{ tenant, user, changeID string }{
		{"fabrikam.com", "alice@fabrikam.com", "c1"},
		{"fabrikam.com", "Alice.Smith+Tag@FABRIKAM.com", "uid:INBOX/7/4/new"},
		{"mail.fabrikam.co.uk", "ÄLICE@Bücher.example", "ü"},
		{"x.y", "ǅ\u0130i@x.y", ""},
		{"x.y", strings.Repeat("LongUser", 40), strings.Repeat("c", MaxChangeIDLen)},
	}
	for _, tt := range tests {
		lower := strings.ToLower(tt.user)
		token := userTokenEncoding.EncodeToString(referenceMAC(key, "user", tt.tenant, lower)[:16])
		if got := k.UserToken(tt.tenant, tt.user); got != token {
			t.Errorf("UserToken(%q, %q) = %q, want %q", tt.tenant, tt.user, got, token)
		}
		tenant := strings.ReplaceAll(tt.tenant, ".", "_")
		if got, want := k.Subject(tt.tenant, tt.user), "mail."+tenant+"."+token; got != want {
			t.Errorf("Subject = %q, want %q", got, want)
		}
		if got, want := string(k.AppendSubject([]byte("x"), tt.tenant, tt.user)), "xmail."+tenant+"."+token; got != want {
			t.Errorf("AppendSubject = %q, want %q", got, want)
		}
		if got, want := k.UserKey(tt.tenant, tt.user), tenant+"."+token; got != want {
			t.Errorf("UserKey = %q, want %q", got, want)
		}
		e := Event{Tenant: tt.tenant, User: tt.user, Source: SourceDovecotOX, ChangeID: tt.changeID}
		id := userTokenEncoding.EncodeToString(referenceMAC(key, "msg", tt.tenant, lower, string(e.Source), tt.changeID)[:20])
		if got := k.MsgID(&e); got != id {
			t.Errorf("MsgID = %q, want %q", got, id)
		}
		if got := string(k.AppendMsgID([]byte("x"), &e)); got != "x"+id {
			t.Errorf("AppendMsgID = %q, want x%q", got, id)
		}
	}
	if got, want := k.UserToken("fabrikam.com", "alice@fabrikam.com"), "lvvlsyyq4xszkm4j62b42zjzym"; got != want {
		t.Errorf("UserToken changed: %q, was %q", got, want)
	}
}
