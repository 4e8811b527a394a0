package imap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// UserPassword is one user of a users file.
type UserPassword struct {
	// Tenant is the user's tenant; empty matches the user in any tenant.
	Tenant string `json:"tenant,omitempty"`
	// User is the login name, the same as the events' user.
	User string `json:"user"`
	// Password is the user's IMAP password.
	Password string `json:"password"`
}

// UsersFile is the JSON form of the per-user passwords:
//
//	{"users":[{"tenant":"example.com","user":"alice@example.com","password":"..."}]}
//
// Unknown fields are an error. The file holds passwords: keep it readable
// by pushproxy only.
type UsersFile struct {
	Users []UserPassword `json:"users"`
}

// maxUsersFile bounds a users file.
const maxUsersFile = 64 << 20

// Users are the users that log in with their own password. They never
// change after they are built, so they are safe for concurrent use.
type Users struct {
	passwords map[userKey]string
}

type userKey struct{ tenant, user string }

// NewUsers checks the entries and builds Users: each needs a user and a
// password, and a tenant and user appear once.
func NewUsers(entries []UserPassword) (*Users, error) {
	u := &Users{passwords: make(map[userKey]string, len(entries))}
	for i, e := range entries {
		if e.User == "" || strings.TrimSpace(e.User) != e.User {
			return nil, fmt.Errorf("user %d: a user name without surrounding spaces is required", i+1)
		}
		if e.Password == "" {
			return nil, fmt.Errorf("user %q: a password is required", e.User)
		}
		key := userKey{strings.ToLower(strings.TrimSpace(e.Tenant)), e.User}
		if _, dup := u.passwords[key]; dup {
			return nil, fmt.Errorf("user %q of tenant %q is listed twice", e.User, key.tenant)
		}
		u.passwords[key] = e.Password
	}
	return u, nil
}

// ParseUsers reads a users file's JSON (see UsersFile).
func ParseUsers(data []byte) (*Users, error) {
	if len(data) > maxUsersFile {
		return nil, fmt.Errorf("users file larger than %d bytes", maxUsersFile)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f UsersFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parsing users file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing users file: more than one JSON document")
	}
	return NewUsers(f.Users)
}

// LoadUsersFile reads the users file at path (see UsersFile).
func LoadUsersFile(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading IMAP users file: %w", err)
	}
	u, err := ParseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("IMAP users file %s: %w", path, err)
	}
	return u, nil
}

// Password is the password of user in tenant: the entry of that tenant,
// or else the entry without a tenant.
func (u *Users) Password(tenant, user string) (string, bool) {
	tenant = strings.ToLower(strings.TrimSpace(tenant))
	if p, ok := u.passwords[userKey{tenant, user}]; ok {
		return p, true
	}
	p, ok := u.passwords[userKey{"", user}]
	return p, ok
}

// Len is the number of users.
func (u *Users) Len() int { return len(u.passwords) }
