package imap

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestParseUsers(t *testing.T) {
	cases := []struct {
		name    string
		file    string
		wantErr string
		lookups map[[2]string]string // {tenant, user} → password, "" when absent
	}{
		{name: "tenant and any tenant",
			file: `{"users":[{"tenant":"Example.com","user":"alice@example.com","password":"a"},{"user":"bob","password":"b"},{"tenant":"other.org","user":"bob","password":"b2"}]}`,
			lookups: map[[2]string]string{
				{"example.com", "alice@example.com"}: "a",
				{"other.org", "alice@example.com"}:   "",
				{"example.com", "bob"}:               "b",
				{"other.org", "bob"}:                 "b2",
				{"example.com", "Alice@example.com"}: "",
			}},
		{name: "empty", file: `{"users":[]}`},
		{name: "unknown field", file: `{"users":[{"user":"a","password":"b","pasword":"c"}]}`, wantErr: "unknown field"},
		{name: "no password", file: `{"users":[{"user":"a"}]}`, wantErr: "password is required"},
		{name: "no user", file: `{"users":[{"password":"p"}]}`, wantErr: "user name"},
		{name: "spaces", file: `{"users":[{"user":" a","password":"p"}]}`, wantErr: "user name"},
		{name: "twice", file: `{"users":[{"user":"a","password":"p"},{"tenant":"","user":"a","password":"q"}]}`, wantErr: "twice"},
		{name: "two documents", file: `{"users":[]} {"users":[]}`, wantErr: "more than one"},
		{name: "not JSON", file: `users: []`, wantErr: "parsing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseUsers([]byte(tc.file))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for key, want := range tc.lookups {
				got, ok := u.Password(key[0], key[1])
				if got != want || ok != (want != "") {
					t.Errorf("Password(%q, %q) = %q, %v; want %q", key[0], key[1], got, ok, want)
				}
			}
		})
	}
}

func TestLoadUsersFile(t *testing.T) {
	dir := t.TempDir()
	path := testfs.Write(t, dir, "users.json", `{"users":[{"user":"a","password":"p"}]}`)
	u, err := LoadUsersFile(path)
	if err != nil || u.Len() != 1 {
		t.Fatalf("users %v, %v", u, err)
	}
	if _, err := LoadUsersFile(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("a missing file loaded")
	}
}

// FuzzParseUsers parses arbitrary users files: no panic, and every listed
// user is found with a password. Seeds: testdata/fuzz/FuzzParseUsers.
func FuzzParseUsers(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := ParseUsers(data)
		if err != nil {
			return
		}
		var file UsersFile
		_ = json.Unmarshal(data, &file)
		for _, e := range file.Users {
			if p, ok := u.Password(e.Tenant, e.User); !ok || p == "" {
				t.Fatalf("user %q of tenant %q not found", e.User, e.Tenant)
			}
		}
	})
}
