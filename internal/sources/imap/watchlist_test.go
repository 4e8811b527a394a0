package imap

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestParseWatchList(t *testing.T) {
	cases := []struct {
		name    string
		file    string
		want    string // "tenant/user" of each mailbox
		wantErr string
	}{
		{name: "users", file: `{"users":[{"tenant":"Example.com","user":"alice@example.com"},{"tenant":"other.org","user":"bob"}]}`,
			want: "[example.com/alice@example.com other.org/bob]"},
		{name: "a users file with passwords", file: `{"users":[{"tenant":"example.com","user":"alice@example.com","password":"p"}]}`,
			want: "[example.com/alice@example.com]"},
		{name: "empty", file: `{"users":[]}`, want: "[]"},
		{name: "the same user in two tenants", file: `{"users":[{"tenant":"a.com","user":"x"},{"tenant":"b.com","user":"x"}]}`, want: "[a.com/x b.com/x]"},
		{name: "no tenant", file: `{"users":[{"user":"alice"}]}`, wantErr: "tenant"},
		{name: "bad tenant", file: `{"users":[{"tenant":"localhost","user":"alice"}]}`, wantErr: "tenant"},
		{name: "no user", file: `{"users":[{"tenant":"example.com"}]}`, wantErr: "user"},
		{name: "space in the user", file: `{"users":[{"tenant":"example.com","user":"a b"}]}`, wantErr: "user"},
		{name: "twice", file: `{"users":[{"tenant":"example.com","user":"a"},{"tenant":"EXAMPLE.com","user":"a"}]}`, wantErr: "twice"},
		{name: "unknown field", file: `{"users":[{"tenant":"example.com","user":"a","mailbox":"x"}]}`, wantErr: "unknown field"},
		{name: "two documents", file: `{"users":[]} {}`, wantErr: "more than one"},
		{name: "not JSON", file: `users:`, wantErr: "parsing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			boxes, err := ParseWatchList([]byte(tc.file))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, b := range boxes {
				if b.Name != events.Inbox {
					t.Errorf("mailbox %q", b.Name)
				}
				got = append(got, b.Tenant+"/"+b.User)
			}
			if fmt.Sprint(got) != tc.want && !(tc.want == "[]" && len(got) == 0) {
				t.Errorf("mailboxes %v, want %s", got, tc.want)
			}
		})
	}
}

func TestLoadWatchList(t *testing.T) {
	dir := t.TempDir()
	path := testfs.Write(t, dir, "watch.json", `{"users":[{"tenant":"example.com","user":"a"}]}`)
	if boxes, err := LoadWatchList(path); err != nil || len(boxes) != 1 {
		t.Fatalf("watch list %v, %v", boxes, err)
	}
	if _, err := LoadWatchList(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("a missing file loaded")
	}
}

// FuzzParseWatchList parses arbitrary watch lists: no panic, and every
// mailbox is a valid INBOX, listed once. Seeds:
// testdata/fuzz/FuzzParseWatchList.
func FuzzParseWatchList(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		boxes, err := ParseWatchList(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, b := range boxes {
			if events.ValidateTenant(b.Tenant) != nil || events.ValidateAddress("user", b.User) != nil || b.Name != events.Inbox {
				t.Fatalf("mailbox %+v", b)
			}
			key := b.Tenant + "\x00" + b.User
			if seen[key] {
				t.Fatalf("mailbox %+v twice", b)
			}
			seen[key] = true
		}
	})
}
