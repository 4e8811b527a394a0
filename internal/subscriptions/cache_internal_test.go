package subscriptions

import (
	"container/list"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// entry is a bucket entry as a read or the watch hands it over.
type entry struct {
	key string
	rev uint64
	op  jetstream.KeyValueOp
	val []byte
}

func (e entry) Bucket() string                  { return "subscriptions" }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.val }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return time.Now() }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }

// TestCacheMergeKeepsTheNewest: a read and the watch hand over a user's
// entries in any order; the newest revision of each key wins, a deletion
// included, so a read that raced a change never brings an older value
// back.
func TestCacheMergeKeepsTheNewest(t *testing.T) {
	val, err := json.Marshal(Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "app", DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	put := func(rev uint64) entry { return entry{key: "u1.d1", rev: rev, op: jetstream.KeyValuePut, val: val} }
	del := func(rev uint64) entry { return entry{key: "u1.d1", rev: rev, op: jetstream.KeyValueDelete} }
	tests := []struct {
		name    string
		entries []entry
		want    int
	}{
		{"put", []entry{put(3)}, 1},
		{"put then delete", []entry{put(3), del(5)}, 0},
		{"delete then the older put", []entry{del(5), put(3)}, 0},
		{"delete then a newer put", []entry{del(5), put(7)}, 1},
		{"the same put twice", []entry{put(3), put(3)}, 1},
		{"unreadable value", []entry{{key: "u1.d1", rev: 2, op: jetstream.KeyValuePut, val: []byte("{")}}, 0},
		{"purge", []entry{put(3), {key: "u1.d1", rev: 4, op: jetstream.KeyValuePurge}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Cache{store: &Store{now: time.Now}, maxUsers: 10, users: map[string]*cachedUser{}, lru: list.New(), recent: map[string]*recentChanges{}}
			u, _ := c.claimOne("u1")
			close(u.ready)
			for _, e := range tt.entries {
				c.observe(e)
			}
			c.observe(entry{key: "u2.d1", rev: 9, op: jetstream.KeyValuePut, val: val}) // a user not held
			if got := len(c.live(u)); got != tt.want {
				t.Errorf("live subscriptions = %d, want %d", got, tt.want)
			}
			if subs, users := c.Len(); subs != tt.want || users != 1 {
				t.Errorf("Len = %d, %d; want %d, 1", subs, users, tt.want)
			}
		})
	}
}

// TestCacheRemembersChangesOfUsersNotHeld: a change the watch sees while
// its user is not held is merged when the user is read, so a read from a
// replica a moment behind cannot lose it; only maxRecent users are kept.
func TestCacheRemembersChangesOfUsersNotHeld(t *testing.T) {
	val, err := json.Marshal(Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com", AppID: "app", DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cache{store: &Store{now: time.Now}, maxUsers: 10, users: map[string]*cachedUser{}, lru: list.New(), recent: map[string]*recentChanges{}}
	c.observe(entry{key: "u1.d1", rev: 7, op: jetstream.KeyValuePut, val: val})
	c.observe(entry{key: "u2.d1", rev: 8, op: jetstream.KeyValueDelete})
	u1, _ := c.claimOne("u1")
	// The read, from a replica behind, has an older value of u1.d1 and
	// nothing of u2.
	c.merge(u1, "u1.d1", cachedEntry{rev: 3, gone: true})
	close(u1.ready)
	if got := len(c.live(u1)); got != 1 {
		t.Fatalf("u1 has %d subscriptions, want the one the watch saw", got)
	}
	if _, ok := c.recent["u1"]; ok {
		t.Fatal("u1's changes still kept apart after it was read")
	}
	// A failed read keeps what the watch told of the user for the next.
	u3, _ := c.claimOne("u3")
	c.observe(entry{key: "u3.d1", rev: 9, op: jetstream.KeyValuePut, val: val})
	c.fail(u3, errors.New("no answer"))
	close(u3.ready)
	if _, held := c.users["u3"]; held || c.recent["u3"] == nil || len(c.recent["u3"].keys) != 1 {
		t.Fatalf("after a failed read: held %v, kept apart %+v", held, c.recent["u3"])
	}
	u3, _ = c.claimOne("u3")
	close(u3.ready)
	if got := len(c.live(u3)); got != 1 {
		t.Fatalf("u3 read again has %d subscriptions, want the one the watch saw before the failed read", got)
	}
	for i := range maxRecent + 1 {
		c.observe(entry{key: "v" + strconv.Itoa(i) + ".d1", rev: uint64(10 + i), op: jetstream.KeyValueDelete})
	}
	if len(c.recent) != maxRecent {
		t.Fatalf("changes kept for %d users, want %d", len(c.recent), maxRecent)
	}
	if _, ok := c.recent["u2"]; ok {
		t.Fatal("the oldest user's changes were not dropped")
	}
}
