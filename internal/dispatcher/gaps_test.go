package dispatcher

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/unread"
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

// TestGapCheckAsksTheLeaderWhenAReplicaIsBehind gives the MAIL stream a
// copy that is behind and answers direct gets in its name (a mirror with
// MirrorDirect that holds none of alice's events), as a follower that has
// not yet stored what the leader acknowledged does: some direct gets now
// answer "no event". Every check must still find the event between the
// state and the next one, asking the leader, rather than take the stream
// for behind and wait.
func TestGapCheckAsksTheLeaderWhenAReplicaIsBehind(t *testing.T) {
	d := onePartition(t)
	ctx := context.Background()
	subject := storedAliceMail(t, d, 2)
	// The mirror starts after alice's events; it serves direct gets once
	// it has copied a message (bob's) and is nearly caught up.
	mirror, err := d.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "MAIL_BEHIND", Mirror: &jetstream.StreamSource{Name: d.stream, OptStartSeq: 3}, MirrorDirect: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	bob := events.Event{Tenant: aliceTenant, User: "bob@fabrikam.com", Kind: events.KindNew, ChangeID: "b1"}
	bob.Normalize()
	data, _ := bob.Encode()
	if _, err := d.js.PublishMsg(ctx, &nats.Msg{Subject: d.keyer.Subject(aliceTenant, bob.User), Data: data}); err != nil {
		t.Fatal(err)
	}
	waitMirrored(t, mirror, 1)
	behind := false
	for range 500 {
		if _, err := d.streamHandle.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject)); errors.Is(err, jetstream.ErrMsgNotFound) {
			behind = true
			break
		}
	}
	if !behind {
		t.Fatal("every direct get was answered by the stream itself: the test shows nothing")
	}
	w := d.newWorker(0, 0)
	for i := range 50 {
		c := &gapCheck{user: &user{Key: alice}, subject: subject, after: 0, next: 2}
		if err := w.readGap(ctx, c); err != nil || !c.done || len(c.missing) != 1 || c.missing[0].Sequence != 1 {
			t.Fatalf("check %d: error %v, done %v, %d missing; want event 1 missing", i, err, c.done, len(c.missing))
		}
	}
	if got := testutil.ToFloat64(d.metrics.gapLeaderReads); got == 0 {
		t.Error("no check asked the leader")
	}
}

// TestGapCheckConfirmsStatesWithTheLeader: a check that finds events
// missing reads the user's state again from the unread bucket's leader.
// When the leader holds a newer state (the one read came from a replica
// behind), that state replaces it and the events it holds are not
// missing; when it holds the same one, the events were skipped. A user
// holding events keeps its state: the missing events are applied to it,
// but those the leader's state holds do not count as skipped.
func TestGapCheckConfirmsStatesWithTheLeader(t *testing.T) {
	d := onePartition(t)
	ctx := context.Background()
	subject := storedAliceMail(t, d, 3)
	key := d.keyer.UserKey(aliceTenant, alice)
	rev, err := d.unread.Put(ctx, key, unread.State{Count: 2, LastSeq: 2}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		read      unread.State // the state the worker read
		readRev   uint64
		holding   bool     // the user holds an event (a push in flight)
		missing   []uint64 // after confirming
		skipped   []uint64 // of those, the ones that count as skipped
		after     uint64
		staleRead bool
	}{
		{"read from a replica behind: the leader's state holds them", unread.State{}, 0, false, nil, nil, 2, true},
		{"read as the leader holds it: nothing missing", unread.State{Count: 2, LastSeq: 2}, rev, false, nil, nil, 2, false},
		{"the state the leader holds too: the events were skipped", unread.State{Count: 1, LastSeq: 1}, rev, false, []uint64{2}, []uint64{2}, 1, false},
		{"an older state kept with a push in flight: applied, not skipped", unread.State{}, 0, true, []uint64{1, 2}, nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := d.newWorker(0, 0)
			u := w.ledger.Add(key, aliceTenant, alice)
			w.ledger.Load(u, tt.read, tt.readRev)
			if tt.holding {
				// An event past the stream's end, applied and held.
				e := events.Event{Tenant: aliceTenant, User: alice, Kind: events.KindNew, ChangeID: "held"}
				e.Normalize()
				w.ledger.Apply(time.Now(), u, &e, &held{seq: 100, user: u})
			}
			stale := testutil.ToFloat64(d.metrics.gapStaleStates)
			stateBefore := u.State().LastSeq
			c := &gapCheck{user: u, subject: subject, after: tt.read.LastSeq, next: 3}
			if err := w.readGap(ctx, c); err != nil {
				t.Fatal(err)
			}
			if err := w.confirmGaps(ctx, []*gapCheck{c}); err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, m := range c.missing {
				got = append(got, m.Sequence)
			}
			var skipped []uint64
			hs, _ := w.withMissing([]*gapCheck{c}, nil, time.Now())
			for _, h := range hs {
				if h.gap {
					skipped = append(skipped, h.seq)
				}
			}
			wantState := tt.after
			if tt.holding {
				wantState = stateBefore
			}
			staleRead := testutil.ToFloat64(d.metrics.gapStaleStates) > stale
			if !slices.Equal(got, tt.missing) || !slices.Equal(skipped, tt.skipped) || c.after != tt.after || staleRead != tt.staleRead || u.State().LastSeq != wantState {
				t.Errorf("missing %v (skipped %v), after %d, state at %d, stale read %v; want %v (%v), %d, %d, %v",
					got, skipped, c.after, u.State().LastSeq, staleRead, tt.missing, tt.skipped, tt.after, wantState, tt.staleRead)
			}
		})
	}
}

// storedAliceMail stores n new-mail events of alice (storeMail) and
// returns her subject as stored, with the partition.
func storedAliceMail(t *testing.T, d *Dispatcher, n int) string {
	t.Helper()
	storeMail(t, d, n)
	m, err := d.streamHandle.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return m.Subject
}
