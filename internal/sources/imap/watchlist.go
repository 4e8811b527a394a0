package imap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// WatchEntry is one user of a watch list.
type WatchEntry struct {
	// Tenant is the user's tenant (required: the events name it).
	Tenant string `json:"tenant"`
	// User is the login name, the same as the events' user.
	User string `json:"user"`
	// Password is ignored. It is allowed so that a users file (see
	// UsersFile) whose entries all name their tenant can serve as the
	// watch list too.
	Password string `json:"password,omitempty"`
}

// WatchList is the JSON form of the users the watcher watches, each with
// its INBOX:
//
//	{"users":[{"tenant":"example.com","user":"alice@example.com"}]}
//
// Unknown fields are an error.
type WatchList struct {
	Users []WatchEntry `json:"users"`
}

// ParseWatchList reads a watch list's JSON (see WatchList) into the
// mailboxes to watch: each user's INBOX, the tenant in lower case. A user
// without a valid tenant or name, or listed twice, is an error.
func ParseWatchList(data []byte) ([]sources.Mailbox, error) {
	if len(data) > maxUsersFile {
		return nil, fmt.Errorf("watch list larger than %d bytes", maxUsersFile)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var list WatchList
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("parsing watch list: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing watch list: more than one JSON document")
	}
	boxes := make([]sources.Mailbox, 0, len(list.Users))
	seen := make(map[sources.Mailbox]bool, len(list.Users))
	for i, e := range list.Users {
		box, err := watchedMailbox(sources.Mailbox{Tenant: e.Tenant, User: e.User})
		if err != nil {
			return nil, fmt.Errorf("watch list user %d: %w", i+1, err)
		}
		if seen[box] {
			return nil, fmt.Errorf("watch list user %d: user %q of tenant %q is listed twice", i+1, sources.Clip(box.User), box.Tenant)
		}
		seen[box] = true
		boxes = append(boxes, box)
	}
	return boxes, nil
}

// LoadWatchList reads the watch list at path (see WatchList).
func LoadWatchList(path string) ([]sources.Mailbox, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading IMAP watch list: %w", err)
	}
	boxes, err := ParseWatchList(data)
	if err != nil {
		return nil, fmt.Errorf("IMAP watch list %s: %w", path, err)
	}
	return boxes, nil
}
