package unread_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/compact"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/storage"
	"github.com/pushproxy/pushproxy/internal/unread"
)

var when = time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)

func ev(kind events.Kind, mailbox string, count int, unreadCount *int) *events.Event {
	return &events.Event{Kind: kind, Mailbox: mailbox, Count: count, Unread: unreadCount, OccurredAt: when}
}

func TestApply(t *testing.T) {
	moved := ev(events.KindMoved, "Archive", 2, nil)
	moved.FromMailbox = events.Inbox
	movedIn := ev(events.KindMoved, events.Inbox, 1, nil)
	movedIn.FromMailbox = "Junk"
	tests := []struct {
		name      string
		from      unread.State
		event     *events.Event
		seq       uint64
		opts      unread.Options
		want      unread.State
		wantApply bool
	}{
		{"authoritative count sets and is exact", unread.State{Count: 9, LastSeq: 4}, ev(events.KindNew, events.Inbox, 1, events.IntPtr(3)), 5, unread.Options{},
			unread.State{Count: 3, Exact: true, LastSeq: 5, LastEventAt: when}, true},
		{"new mail adds and is an estimate", unread.State{Count: 3, Exact: true, LastSeq: 5}, ev(events.KindNew, events.Inbox, 2, nil), 6, unread.Options{},
			unread.State{Count: 5, LastSeq: 6, LastEventAt: when}, true},
		{"read subtracts, never below zero", unread.State{Count: 1, LastSeq: 6}, ev(events.KindRead, events.Inbox, 3, nil), 7, unread.Options{},
			unread.State{Count: 0, LastSeq: 7, LastEventAt: when}, true},
		{"deleted subtracts", unread.State{Count: 4}, ev(events.KindDeleted, events.Inbox, 1, nil), 1, unread.Options{},
			unread.State{Count: 3, LastSeq: 1, LastEventAt: when}, true},
		{"unread adds", unread.State{Count: 0}, ev(events.KindUnread, events.Inbox, 1, nil), 1, unread.Options{},
			unread.State{Count: 1, LastSeq: 1, LastEventAt: when}, true},
		{"a move out of the inbox subtracts", unread.State{Count: 4, Exact: true}, moved, 2, unread.Options{},
			unread.State{Count: 2, LastSeq: 2, LastEventAt: when}, true},
		{"a move into the inbox adds", unread.State{Count: 4, Exact: true}, movedIn, 2, unread.Options{},
			unread.State{Count: 5, LastSeq: 2, LastEventAt: when}, true},
		{"other mailboxes do not count", unread.State{Count: 4, Exact: true}, ev(events.KindNew, "Junk", 1, events.IntPtr(40)), 2, unread.Options{},
			unread.State{Count: 4, Exact: true, LastSeq: 2, LastEventAt: when}, true},
		{"flags do not change the count", unread.State{Count: 4, Exact: true}, ev(events.KindFlags, events.Inbox, 1, nil), 3, unread.Options{},
			unread.State{Count: 4, Exact: true, LastSeq: 3, LastEventAt: when}, true},
		{"a redelivery is ignored", unread.State{Count: 4, LastSeq: 10}, ev(events.KindNew, events.Inbox, 1, events.IntPtr(99)), 10, unread.Options{},
			unread.State{Count: 4, LastSeq: 10}, false},
		{"an older event is ignored", unread.State{Count: 4, LastSeq: 10}, ev(events.KindRead, events.Inbox, 1, nil), 3, unread.Options{},
			unread.State{Count: 4, LastSeq: 10}, false},
		{"another counted mailbox", unread.State{}, ev(events.KindNew, "Team", 1, events.IntPtr(7)), 1, unread.Options{Mailbox: "Team"},
			unread.State{Count: 7, Exact: true, LastSeq: 1, LastEventAt: when}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, applied := unread.Apply(tt.from, tt.event, tt.seq, tt.opts)
			if applied != tt.wantApply || got.Count != tt.want.Count || got.Exact != tt.want.Exact || got.LastSeq != tt.want.LastSeq || !got.LastEventAt.Equal(tt.want.LastEventAt) {
				t.Fatalf("Apply = %+v, %v; want %+v, %v", got, applied, tt.want, tt.wantApply)
			}
		})
	}
}

func TestPushed(t *testing.T) {
	s := unread.State{Count: 3}
	if !s.NeedsPush() {
		t.Fatal("a state never pushed needs a push")
	}
	s = s.Pushed(3, 8, when)
	if s.NeedsPush() || *s.LastPushedCount != 3 || s.LastPushedSeq != 8 || !s.LastPushedAt.Equal(when) {
		t.Fatalf("after Pushed: %+v", s)
	}
	s.Count = 4
	if !s.NeedsPush() {
		t.Fatal("a changed count needs a push")
	}
}

func TestStore(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	store, err := unread.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	key := brokertest.Keyer(t, conn).UserKey("fabrikam.com", "alice@fabrikam.com")
	st, rev, err := store.Get(ctx, key)
	if err != nil || rev != 0 || st.Count != 0 {
		t.Fatalf("Get of a new user = %+v, %d, %v", st, rev, err)
	}
	rev1, err := store.Put(ctx, key, unread.State{Count: 2, LastSeq: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, key, unread.State{Count: 5}, 0); !errors.Is(err, unread.ErrConflict) {
		t.Fatalf("create over an existing state = %v, want ErrConflict", err)
	}
	if _, err := store.Put(ctx, key, unread.State{Count: 3, LastSeq: 2}, rev1); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, key, unread.State{Count: 4}, rev1); !errors.Is(err, unread.ErrConflict) {
		t.Fatalf("update with a stale revision = %v, want ErrConflict", err)
	}

	// Concurrent increments through Update all land.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := store.Update(ctx, key, func(s unread.State) (unread.State, error) {
				s, _ = unread.Apply(s, ev(events.KindNew, events.Inbox, 1, nil), s.LastSeq+1, unread.Options{})
				return s, nil
			})
			if err != nil {
				t.Errorf("Update %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	st, _, err = store.Get(ctx, key)
	if err != nil || st.Count != 11 || st.LastSeq != 10 {
		t.Fatalf("after concurrent updates: %+v, %v; want count 11, last seq 10", st, err)
	}
	if err := store.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	// A deleted state is created again, like a new one.
	if _, err := store.Put(ctx, key, unread.State{Count: 1}, 0); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
	if st, _, err := store.Get(ctx, key); err != nil || st.Count != 1 {
		t.Fatalf("after create over a deleted state: %+v, %v; want count 1", st, err)
	}
}

// TestGetMany checks that GetMany answers exactly what Get answers, key by
// key: stored states with their revisions, keys never written, deleted
// keys, keys that are not valid, and more keys than one batch holds.
func TestGetMany(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	store, err := unread.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	keyer := brokertest.Keyer(t, conn)
	var keys []string
	for i := range 600 {
		key := keyer.UserKey("fabrikam.com", fmt.Sprintf("user%d@fabrikam.com", i))
		keys = append(keys, key)
		switch i % 4 {
		case 0: // never written
		case 1:
			if _, err := store.Put(ctx, key, unread.State{Count: i, LastSeq: uint64(i)}, 0); err != nil {
				t.Fatal(err)
			}
		case 2: // written, then deleted
			if _, err := store.Put(ctx, key, unread.State{Count: i}, 0); err != nil {
				t.Fatal(err)
			}
			if err := store.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		case 3: // written twice
			rev, err := store.Put(ctx, key, unread.State{Count: 1}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.Put(ctx, key, unread.State{Count: i, Exact: true}, rev); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name string
		keys []string
	}{
		{"one key", keys[1:2]},
		{"a few keys", keys[:7]},
		{"more than a batch", keys},
		{"none stored", []string{keys[0], keys[4], keys[8]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := store.GetMany(ctx, tt.keys)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.keys) {
				t.Fatalf("GetMany returned %d states for %d keys", len(got), len(tt.keys))
			}
			for i, key := range tt.keys {
				st, rev, err := store.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if got[i].Rev != rev || got[i].State.Count != st.Count || got[i].State.Exact != st.Exact || got[i].State.LastSeq != st.LastSeq {
					t.Fatalf("GetMany[%d] = %+v, %d; Get = %+v, %d", i, got[i].State, got[i].Rev, st, rev)
				}
				lst, lrev, err := store.GetFromLeader(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if lrev != rev || lst.Count != st.Count || lst.Exact != st.Exact || lst.LastSeq != st.LastSeq {
					t.Fatalf("GetFromLeader(%s) = %+v, %d; Get = %+v, %d", key, lst, lrev, st, rev)
				}
			}
		})
	}
	if _, err := store.GetMany(ctx, []string{keys[0], "not a key"}); err == nil {
		t.Fatal("GetMany with an invalid key succeeded; Get fails for it")
	}
	if _, _, err := store.GetFromLeader(ctx, "not a key"); err == nil {
		t.Fatal("GetFromLeader with an invalid key succeeded; Get fails for it")
	}
}

// TestStoreReadsBothEncodings: states in JSON (written by an earlier
// release, or before the switch) and compact ones sit side by side; Get,
// GetMany and Update read both, and a write leaves a state in the
// encoding its writer writes.
func TestStoreReadsBothEncodings(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	store, err := unread.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := conn.JS.KeyValue(ctx, broker.BucketUnread)
	if err != nil {
		t.Fatal(err)
	}
	keyer := brokertest.Keyer(t, conn)
	pushed := 2
	writers := []struct {
		store *unread.Store
		first byte
	}{
		{store.WithEncoding(storage.Fixed(storage.JSON)), '{'},
		{store.WithEncoding(storage.Fixed(storage.Compact)), compact.Version1},
	}
	var keys []string
	for i, w := range writers {
		key := keyer.UserKey("fabrikam.com", fmt.Sprintf("user%d@fabrikam.com", i))
		keys = append(keys, key)
		st := unread.State{Count: 2, Exact: true, LastSeq: 40, LastEventAt: when, LastPushedCount: &pushed, LastPushedAt: when, LastPushedSeq: 40}
		if _, err := w.store.Put(ctx, key, st, 0); err != nil {
			t.Fatal(err)
		}
		if got := brokertest.FirstByte(t, kv, key); got != w.first {
			t.Fatalf("writer %d stored a value starting with %q, want %q", i, got, w.first)
		}
	}
	loaded, err := store.GetMany(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded[0].State, loaded[1].State) || loaded[0].State.Count != 2 || *loaded[1].State.LastPushedCount != 2 {
		t.Fatalf("JSON gives back %+v, compact %+v", loaded[0].State, loaded[1].State)
	}
	// Each writer rewrites the other's state in its own encoding.
	for i, w := range writers {
		key := keys[1-i]
		next, err := w.store.Update(ctx, key, func(s unread.State) (unread.State, error) { s.Count++; return s, nil })
		if err != nil || next.Count != 3 || !next.LastEventAt.Equal(when) {
			t.Fatalf("Update = %+v, %v", next, err)
		}
		if got := brokertest.FirstByte(t, kv, key); got != w.first {
			t.Fatalf("after writer %d's update: a value starting with %q, want %q", i, got, w.first)
		}
	}
}

// TestStoreWritesWhatTheSettingsSay: a store reads the storage settings
// before its first write: a new installation writes compact, and an
// operator's switch to JSON reaches a store opened after it.
func TestStoreWritesWhatTheSettingsSay(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	kv, config := brokertest.KV(t, conn.JS, broker.BucketUnread), brokertest.KV(t, conn.JS, broker.BucketConfig)
	keyer := brokertest.Keyer(t, conn)
	steps := []struct {
		set   storage.Encoding // "": as provisioned
		first byte
	}{
		{"", compact.Version1},
		{storage.JSON, '{'},
	}
	for i, s := range steps {
		if s.set != "" {
			if _, _, err := storage.SetEncoding(ctx, config, s.set, storage.ByOperator, when); err != nil {
				t.Fatal(err)
			}
		}
		store, err := unread.Open(ctx, conn.JS)
		if err != nil {
			t.Fatal(err)
		}
		key := keyer.UserKey("fabrikam.com", fmt.Sprintf("user%d@fabrikam.com", i))
		if _, err := store.Put(ctx, key, unread.State{Count: 1}, 0); err != nil {
			t.Fatal(err)
		}
		if got := brokertest.FirstByte(t, kv, key); got != s.first {
			t.Fatalf("step %d: a value starting with %q, want %q", i, got, s.first)
		}
	}
}
