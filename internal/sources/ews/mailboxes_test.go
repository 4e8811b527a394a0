package ews

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/testfs"
)

func TestNewMailboxList(t *testing.T) {
	tests := []struct {
		name    string
		entries []ManagedMailbox
		want    []ManagedMailbox
		err     string
	}{
		{"normalised and sorted", []ManagedMailbox{{"Fabrikam.com.", " bob@fabrikam.com"}, {"contoso.com", "carol@contoso.com"}, {"fabrikam.com", "alice@fabrikam.com"}},
			[]ManagedMailbox{{"contoso.com", "carol@contoso.com"}, {"fabrikam.com", "alice@fabrikam.com"}, {"fabrikam.com", "bob@fabrikam.com"}}, ""},
		{"empty", nil, []ManagedMailbox{}, ""},
		{"bad tenant", []ManagedMailbox{{"not a domain", "alice@fabrikam.com"}}, nil, "mailbox 1"},
		{"no user", []ManagedMailbox{{"fabrikam.com", ""}}, nil, "mailbox 1"},
		{"not an address", []ManagedMailbox{{"fabrikam.com", "alice"}}, nil, "not an SMTP address"},
		{"twice", []ManagedMailbox{{"fabrikam.com", "alice@fabrikam.com"}, {"fabrikam.com", "ALICE@fabrikam.com"}}, nil, "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewMailboxList(tt.entries)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("list %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestMailboxListFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, path string
		want       int
		err        string
	}{
		{"golden", filepath.Join("testdata", "mailboxes.json"), 2, ""},
		{"unknown field", testfs.Write(t, dir, "typo.json", `{"mailboxes":[{"tenant":"fabrikam.com","usr":"alice@fabrikam.com"}]}`), 0, "unknown field"},
		{"bad entry", testfs.Write(t, dir, "bad.json", `{"mailboxes":[{"tenant":"fabrikam.com","user":"alice"}]}`), 0, "not an SMTP address"},
		{"missing", filepath.Join(dir, "missing.json"), 0, "reading EWS mailbox list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewMailboxListFile(tt.path).ListMailboxes(context.Background())
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || len(got) != tt.want || got[0] != (ManagedMailbox{Tenant: "fabrikam.com", User: aliceAddr}) {
				t.Fatalf("list %v, %v", got, err)
			}
		})
	}
}
