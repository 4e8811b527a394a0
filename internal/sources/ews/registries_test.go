package ews

import (
	"context"
	"errors"
	"testing"
)

// registryFunc is a SubscriptionRegistry from a function.
type registryFunc func(id string) (Subscription, error)

func (f registryFunc) Lookup(_ context.Context, id string) (Subscription, error) { return f(id) }

func TestRegistriesAskInTurn(t *testing.T) {
	file, err := NewStaticRegistry([]RegistryEntry{{SubscriptionID: "from-file", Tenant: "fabrikam.com", User: "alice@fabrikam.com", InboxFolderID: "inbox-a"}})
	if err != nil {
		t.Fatal(err)
	}
	managed := registryFunc(func(id string) (Subscription, error) {
		if id == "managed" {
			return Subscription{Tenant: "fabrikam.com", User: "bob@fabrikam.com"}, nil
		}
		return Subscription{}, ErrUnknownSubscription
	})
	standby := registryFunc(func(string) (Subscription, error) { return Subscription{}, ErrNotReady })
	tests := []struct {
		name string
		regs Registries
		id   string
		user string
		err  error
	}{
		{"the file knows it", Registries{file, managed}, "from-file", "alice@fabrikam.com", nil},
		{"the manager knows it", Registries{file, managed}, "managed", "bob@fabrikam.com", nil},
		{"nobody knows it", Registries{file, managed}, "other", "", ErrUnknownSubscription},
		{"the file answers while the manager stands by", Registries{file, standby}, "from-file", "alice@fabrikam.com", nil},
		{"a standby manager cannot tell: retry, not unsubscribe", Registries{file, standby}, "other", "", ErrNotReady},
		{"none at all", Registries{}, "other", "", ErrUnknownSubscription},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := tt.regs.Lookup(context.Background(), tt.id)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if tt.err == nil && sub.User != tt.user {
				t.Fatalf("user %q, want %q", sub.User, tt.user)
			}
			if errors.Is(err, ErrNotReady) && errors.Is(err, ErrUnknownSubscription) {
				t.Fatal("an undecided lookup must not read as unknown")
			}
		})
	}
}
