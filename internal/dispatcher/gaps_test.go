package dispatcher

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/events"
)

// TestGapCheckReadsWhatTheStreamHolds runs a user's check against a real
// stream holding alice's events at 1, 3 and 4 and bob's at 2: it finds
// the events between the state and the next one, none when there are
// none, takes a user with no event at all for a server behind, and
// accepts events the stream's limits removed.
func TestGapCheckReadsWhatTheStreamHolds(t *testing.T) {
	d := onePartition(t)
	ctx := context.Background()
	store := func(user string) string {
		ev := events.Event{Tenant: aliceTenant, User: user, Kind: events.KindNew, ChangeID: user}
		ev.Normalize()
		data, _ := ev.Encode()
		ack, err := d.js.PublishMsg(ctx, &nats.Msg{Subject: d.keyer.Subject(aliceTenant, user), Data: data})
		if err != nil {
			t.Fatal(err)
		}
		m, err := d.streamHandle.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		return m.Subject // as stored, with the partition
	}
	const bob = "bob@fabrikam.com"
	aliceSubject := store(alice)
	bobSubject := store(bob)
	store(alice)
	store(alice)
	carolSubject := d.keyer.Subject(aliceTenant, "carol@fabrikam.com")

	w := d.newWorker(0, 0)
	tests := []struct {
		name        string
		subject     string
		after, next uint64
		missing     []uint64
		err         error
	}{
		{"one event between", aliceSubject, 0, 3, []uint64{1}, nil},
		{"nothing between", aliceSubject, 1, 3, nil, nil},
		{"two events between", aliceSubject, 0, 4, []uint64{1, 3}, nil},
		{"another user's events do not count", bobSubject, 0, 2, nil, nil},
		{"no event of the user from the state on: a server behind", carolSubject, 0, 2, nil, errStreamBehind},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &gapCheck{user: &user{Key: tt.name}, subject: tt.subject, after: tt.after, next: tt.next}
			err := w.readGap(ctx, c)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			var got []uint64
			for _, m := range c.missing {
				got = append(got, m.Sequence)
			}
			if !slices.Equal(got, tt.missing) || c.done != (tt.err == nil) {
				t.Errorf("missing %v, done %v; want %v, done %v", got, c.done, tt.missing, tt.err == nil)
			}
		})
	}

	t.Run("events the stream's limits removed", func(t *testing.T) {
		if err := d.streamHandle.Purge(ctx, jetstream.WithPurgeSequence(5)); err != nil {
			t.Fatal(err)
		}
		c := &gapCheck{user: &user{Key: alice}, subject: aliceSubject, after: 0, next: 3}
		if err := w.readGap(ctx, c); err != nil || !c.done || len(c.missing) != 0 {
			t.Errorf("after a purge: error %v, done %v, missing %d; want done with nothing missing", err, c.done, len(c.missing))
		}
	})
}
