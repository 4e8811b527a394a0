package badges

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/unread"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// ev is a held event of the tests: its sequence and time.
type ev struct {
	seq uint64
	at  time.Time
}

func (e *ev) Seq() uint64     { return e.seq }
func (e *ev) Time() time.Time { return e.at }

var policy = Policy{
	Coalesce:   coalesce.Config{Window: 300 * time.Millisecond, Debounce: 2 * time.Second, MaxDelay: 10 * time.Second},
	RetryDelay: time.Second, MaxRetryDelay: 30 * time.Second, RelayCooldown: 5 * time.Second, MaxPushRetries: 1,
}

// scenario runs steps against one ledger. The last Due of each user and
// the last Settle of each user are kept for the steps that act on them.
type scenario struct {
	t       *testing.T
	l       *Ledger[*ev]
	seq     uint64
	due     map[string]Due[*ev]
	settles map[string]*Settle[*ev]
}

// step is one action at ms; it returns what happened, which the table
// compares with want ("" for nothing).
type step struct {
	ms   int
	do   func(s *scenario, now time.Time) string
	want string
}

func (s *scenario) user(name string) *User[*ev] {
	u := s.l.Add(name+".key", "fabrikam.com", name+"@fabrikam.com")
	if !u.Loaded() {
		s.l.Load(u, unread.State{}, 0)
	}
	return u
}

// apply applies an event of name setting the count (a snapshot) or, with
// count < 0, a new message without a count.
func apply(ms int, name string, count int, want string) step {
	return applyReceived(ms, name, count, -1, want)
}

// applyReceived is apply of an event ingest received at receivedMs (-1:
// no time).
func applyReceived(ms int, name string, count, receivedMs int, want string) step {
	return step{ms: ms, want: want, do: func(s *scenario, now time.Time) string {
		s.seq++
		e := events.Event{Tenant: "fabrikam.com", User: name + "@fabrikam.com", Kind: events.KindSnapshot, Mailbox: events.Inbox, Unread: events.IntPtr(count)}
		if count < 0 {
			e.Kind, e.Unread = events.KindNew, nil
		}
		if receivedMs >= 0 {
			e.ReceivedAt = at(receivedMs)
		}
		e.Normalize()
		if !s.l.Apply(now, s.user(name), &e, &ev{seq: s.seq, at: now}) {
			return "already applied"
		}
		return ""
	}}
}

// due takes what is due (flush: everything waiting) and describes it.
func due(ms int, flush bool, want string) step {
	return step{ms: ms, want: want, do: func(s *scenario, now time.Time) string {
		var ds []Due[*ev]
		if flush {
			ds = s.l.Flush(now)
		} else {
			ds = s.l.Due(now)
		}
		var out []string
		for _, d := range ds {
			s.due[d.User.Name] = d
			desc := fmt.Sprintf("%s=%d %v", name(d.User), d.Push.Count, seqs(d.Events))
			if d.Skip {
				desc = fmt.Sprintf("%s skip %v", name(d.User), seqs(d.Events))
			}
			out = append(out, desc)
		}
		slices.Sort(out)
		return strings.Join(out, "; ")
	}}
}

// act runs f on the user's last Due and describes the Settle it returns.
func act(ms int, who string, f func(l *Ledger[*ev], now time.Time, d Due[*ev]) *Settle[*ev], want string) step {
	return step{ms: ms, want: want, do: func(s *scenario, now time.Time) string {
		return s.keep(f(s.l, now, s.due[who+"@fabrikam.com"]), "")
	}}
}

func send(ms int, who string) step {
	return act(ms, who, func(l *Ledger[*ev], _ time.Time, d Due[*ev]) *Settle[*ev] { l.Send(d); return nil }, "")
}

// answer runs f on the user and describes its Result.
func answer(ms int, who string, f func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev], want string) step {
	return step{ms: ms, want: want, do: func(s *scenario, now time.Time) string {
		r := f(s.l, now, s.user(who))
		return s.keep(r.Settle, r.Requeued)
	}}
}

// settled reports the user's last Settle written (ok) or not.
func settled(ms int, who string, ok bool) step {
	return step{ms: ms, do: func(s *scenario, now time.Time) string {
		st := s.settles[who+"@fabrikam.com"]
		if st == nil {
			s.t.Fatalf("no Settle of %s to report", who)
		}
		s.l.Settled(now, st, ok)
		return ""
	}}
}

// state describes the user's state.
func state(ms int, who string, want string) step {
	return step{ms: ms, want: want, do: func(s *scenario, _ time.Time) string {
		u := s.user(who)
		st := u.State()
		pushed := "never"
		if st.LastPushedCount != nil {
			pushed = fmt.Sprint(*st.LastPushedCount)
		}
		inFlight := "none"
		if p, evs, ok := u.Pushing(); ok && u.InFlight() {
			inFlight = fmt.Sprintf("%d%v", p.Count, seqs(evs))
		}
		return fmt.Sprintf("count=%d pushed=%s in_flight=%s held=%v", st.Count, pushed, inFlight, seqs(u.Held()))
	}}
}

// next describes when the next count is due.
func next(ms int, want string) step {
	return step{ms: ms, want: want, do: func(s *scenario, _ time.Time) string {
		d, ok := s.l.NextDeadline()
		if !ok {
			return "none"
		}
		return fmt.Sprintf("%d ms", d.Sub(t0).Milliseconds())
	}}
}

// keep records a Settle and describes it with the requeue reason.
func (s *scenario) keep(st *Settle[*ev], requeued string) string {
	var out []string
	if st != nil {
		s.settles[st.User.Name] = st
		what := "skip " + st.Skip
		switch {
		case st.Dead != "":
			what = fmt.Sprintf("dead %s attempts=%d", st.Dead, st.Attempts)
		case st.Sent:
			what = fmt.Sprintf("sent %d attempts=%d", st.Push.Count, st.Attempts)
		}
		out = append(out, fmt.Sprintf("settle %s %s %v", name(st.User), what, seqs(st.Events)))
	}
	if requeued != "" {
		out = append(out, "requeued "+requeued)
	}
	return strings.Join(out, "; ")
}

func name(u *User[*ev]) string { return strings.TrimSuffix(u.Name, "@fabrikam.com") }

func seqs(evs []*ev) []uint64 {
	out := []uint64{}
	for _, e := range evs {
		out = append(out, e.seq)
	}
	return out
}

func delivered(n int) func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
	return func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
		return l.Answered(now, u, 1, Answer{Delivered: n})
	}
}

// backOff answers that the relay asks to wait d before sending again.
func backOff(d time.Duration) func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
	return func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
		return l.Answered(now, u, 1, Answer{Transient: true, BackOff: d})
	}
}

// retryBackPressure is the relay refusing a request at the organization's
// quota (429) with back-off d.
func retryBackPressure(d time.Duration) func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
	return func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
		return l.Retry(now, u, 1, RetryRelayBackPressure, d)
	}
}

func TestScenarios(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"a burst is one push, delivered, then recorded", []step{
			next(0, "none"),
			apply(0, "alice", 1, ""), apply(10, "alice", 2, ""), apply(20, "alice", 3, ""),
			next(20, "300 ms"),
			due(299, false, ""),
			due(300, false, "alice=3 [1 2 3]"),
			send(300, "alice"),
			state(301, "alice", "count=3 pushed=never in_flight=3[1 2 3] held=[1 2 3]"),
			answer(350, "alice", delivered(1), "settle alice sent 3 attempts=1 [1 2 3]"),
			settled(360, "alice", true),
			state(361, "alice", "count=3 pushed=3 in_flight=none held=[]"),
		}},
		{"new mail's window counts from when ingest received it", []step{
			applyReceived(1000, "alice", 1, 900, ""),
			next(1000, "1200 ms"),
			due(1199, false, ""),
			due(1200, false, "alice=1 [1]"),
		}},
		{"new mail read most of a window after ingest received it waits a quarter of the window", []step{
			applyReceived(1000, "alice", 1, 720, ""),
			next(1000, "1075 ms"),
			due(1074, false, ""),
			due(1075, false, "alice=1 [1]"),
		}},
		{"a backlog read long after ingest received it waits the whole window", []step{
			applyReceived(60000, "alice", 1, 0, ""),
			applyReceived(60010, "alice", 2, 10, ""),
			next(60010, "60300 ms"),
			due(60299, false, ""),
			due(60300, false, "alice=2 [1 2]"),
		}},
		{"an unchanged count settles without a push", []step{
			apply(0, "alice", 2, ""), due(300, false, "alice=2 [1]"), send(300, "alice"),
			answer(310, "alice", delivered(1), "settle alice sent 2 attempts=1 [1]"), settled(320, "alice", true),
			apply(1000, "alice", 2, ""),
			due(5000, false, "alice skip [2]"),
			act(5000, "alice", func(l *Ledger[*ev], _ time.Time, d Due[*ev]) *Settle[*ev] { return l.Unchanged(d) }, "settle alice skip unchanged [2]"),
		}},
		{"an event while a push is in flight goes in the next one", []step{
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"), send(300, "alice"),
			apply(320, "alice", 2, ""),
			due(700, false, ""),
			answer(800, "alice", delivered(1), "settle alice sent 1 attempts=1 [1]"), settled(810, "alice", true),
			due(800, false, "alice=2 [2]"),
		}},
		{"an event the state holds is held but changes nothing", []step{
			{ms: 0, do: func(s *scenario, _ time.Time) string {
				u := s.l.Add("alice.key", "fabrikam.com", "alice@fabrikam.com")
				s.l.Load(u, unread.State{Count: 4, Exact: true, LastSeq: 5}, 7)
				return fmt.Sprintf("rev=%d dirty=%v", u.Rev(), u.Dirty())
			}, want: "rev=7 dirty=false"},
			apply(10, "alice", 9, "already applied"),
			state(11, "alice", "count=4 pushed=never in_flight=none held=[1]"),
		}},
		{"a relay outage holds the user's latest event only", []step{
			apply(0, "alice", 1, ""), apply(10, "alice", 2, ""), apply(20, "alice", 3, ""),
			due(300, false, "alice=3 [1 2 3]"), send(300, "alice"),
			answer(400, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Retry(now, u, 3, RetryRelayUnavailable, time.Minute)
			}, "settle alice skip held [1 2]; requeued relay_unavailable"),
			settled(410, "alice", true),
			// The relay asked for a minute; for a down relay the wait is
			// capped at MaxRetryDelay (30 s).
			due(5400, false, ""),
			due(30400, false, "alice=3 [3]"),
		}},
		{"the relay's back-off at the organization's quota is the wait", []step{
			// The doubling alone would wait 1, 2, 4 s.
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"), send(300, "alice"),
			answer(400, "alice", retryBackPressure(1500*time.Millisecond), "requeued relay_backpressure"),
			due(1899, false, ""), due(1900, false, "alice=1 [1]"), send(1900, "alice"),
			answer(2000, "alice", retryBackPressure(1500*time.Millisecond), "requeued relay_backpressure"),
			due(3499, false, ""), due(3500, false, "alice=1 [1]"), send(3500, "alice"),
			// Never shorter than RetryDelay; longer than MaxRetryDelay
			// when the relay asks for it.
			answer(3600, "alice", retryBackPressure(time.Millisecond), "requeued relay_backpressure"),
			due(4599, false, ""), due(4600, false, "alice=1 [1]"), send(4600, "alice"),
			answer(4700, "alice", retryBackPressure(45*time.Second), "requeued relay_backpressure"),
			due(49699, false, ""), due(49700, false, "alice=1 [1]"),
		}},
		{"a shutdown keeps every event for the next owner", []step{
			apply(0, "alice", 1, ""), apply(10, "alice", 2, ""),
			due(300, false, "alice=2 [1 2]"), send(300, "alice"),
			answer(400, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Retry(now, u, 0, RetryShutdown, 0)
			}, "requeued shutdown"),
			state(401, "alice", "count=2 pushed=never in_flight=none held=[1 2]"),
		}},
		{"devices asking for a retry, then a dead letter", []step{
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"), send(300, "alice"),
			answer(400, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Answered(now, u, 1, Answer{Transient: true})
			}, "requeued device_retry"),
			due(1000, false, ""),
			due(1400, false, "alice=1 [1]"), send(1400, "alice"),
			answer(1500, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Answered(now, u, 1, Answer{Missing: true})
			}, "settle alice dead missing_response attempts=2 [1]"),
			settled(1510, "alice", true),
			state(1511, "alice", "count=1 pushed=never in_flight=none held=[]"),
		}},
		{"a back-off the relay asks for does not use the budget", []step{
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"), send(300, "alice"),
			answer(400, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Answered(now, u, 1, Answer{Transient: true, BackOff: 5 * time.Second})
			}, "requeued device_backoff"),
			due(5000, false, ""),
			due(5400, false, "alice=1 [1]"), send(5400, "alice"),
			answer(5500, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Answered(now, u, 1, Answer{Transient: true})
			}, "requeued device_retry"),
		}},
		{"the relay's back-off is the wait, not doubled on top", []step{
			// The relay's back-off during a push service's outage; the
			// doubling alone would wait 1, 2, 4, 8 s.
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"), send(300, "alice"),
			answer(400, "alice", backOff(2*time.Second), "requeued device_backoff"),
			due(2399, false, ""), due(2400, false, "alice=1 [1]"), send(2400, "alice"),
			answer(2500, "alice", backOff(2*time.Second), "requeued device_backoff"),
			due(4499, false, ""), due(4500, false, "alice=1 [1]"), send(4500, "alice"),
			answer(4600, "alice", backOff(2*time.Second), "requeued device_backoff"),
			due(6599, false, ""), due(6600, false, "alice=1 [1]"), send(6600, "alice"),
			// Never shorter than RetryDelay.
			answer(6700, "alice", backOff(time.Millisecond), "requeued device_backoff"),
			due(7699, false, ""), due(7700, false, "alice=1 [1]"),
		}},
		{"app faults hold the push without a dead letter", []step{
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"), send(300, "alice"),
			answer(400, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Answered(now, u, 1, Answer{AppFaults: true})
			}, "requeued app_paused"),
			due(1399, false, ""),
			due(1400, false, "alice=1 [1]"),
		}},
		{"paused apps settle all but the latest event and wait", []step{
			apply(0, "alice", 1, ""), apply(10, "alice", 2, ""),
			due(300, false, "alice=2 [1 2]"),
			act(300, "alice", func(l *Ledger[*ev], now time.Time, d Due[*ev]) *Settle[*ev] { return l.Paused(now, d, at(5000)) },
				"settle alice skip app_paused [1]"),
			due(4999, false, ""),
			due(5000, false, "alice=2 [2]"),
		}},
		{"devices not read: all but the latest event settle and the push waits", []step{
			apply(0, "alice", 1, ""), apply(10, "alice", 2, ""),
			due(300, false, "alice=2 [1 2]"),
			act(300, "alice", func(l *Ledger[*ev], now time.Time, d Due[*ev]) *Settle[*ev] { return l.Held(now, d, at(1300)) },
				"settle alice skip held [1]"),
			due(1299, false, ""),
			due(1300, false, "alice=2 [2]"),
		}},
		{"no devices: the push is dropped and its events settled", []step{
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"),
			act(300, "alice", func(l *Ledger[*ev], now time.Time, d Due[*ev]) *Settle[*ev] {
				return l.NotSent(now, d, SkipNoSubscriptions)
			}, "settle alice skip no_subscriptions [1]"),
			due(60000, false, ""),
		}},
		{"refused for good: a dead letter, the devices keep their count", []step{
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"), send(300, "alice"),
			answer(400, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Dead(now, u, 2, "permanent")
			}, "settle alice dead permanent attempts=2 [1]"),
			state(401, "alice", "count=1 pushed=never in_flight=none held=[1]"),
			settled(402, "alice", true),
			state(403, "alice", "count=1 pushed=never in_flight=none held=[]"),
		}},
		{"disabled before sending", []step{
			apply(0, "alice", 1, ""), due(300, false, "alice=1 [1]"), send(300, "alice"),
			answer(400, "alice", func(l *Ledger[*ev], now time.Time, u *User[*ev]) Result[*ev] {
				return l.Disabled(now, u, 0)
			}, "settle alice skip proxy_disabled [1]"),
		}},
		{"a failed write holds the events again and comes back", []step{
			apply(0, "alice", 1, ""), apply(10, "alice", 2, ""), due(300, false, "alice=2 [1 2]"), send(300, "alice"),
			answer(400, "alice", delivered(1), "settle alice sent 2 attempts=1 [1 2]"),
			settled(410, "alice", false),
			state(411, "alice", "count=2 pushed=2 in_flight=none held=[1 2]"),
			// Due again as a decrease would be: after the debounce.
			due(2409, false, ""),
			due(2410, false, "alice skip [1 2]"),
		}},
		{"an answer for a user without a push in flight changes nothing", []step{
			apply(0, "alice", 1, ""),
			answer(10, "alice", delivered(1), ""),
			state(11, "alice", "count=1 pushed=never in_flight=none held=[1]"),
		}},
		{"flush takes what waits before its deadline", []step{
			apply(0, "alice", 1, ""), apply(5, "bob", 2, ""),
			due(10, true, "alice=1 [1]; bob=2 [2]"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scenario{t: t, l: New[*ev](policy), due: map[string]Due[*ev]{}, settles: map[string]*Settle[*ev]{}}
			for i, st := range tt.steps {
				if got := st.do(s, at(st.ms)); got != st.want {
					t.Fatalf("step %d at %d ms: %q, want %q", i, st.ms, got, st.want)
				}
			}
		})
	}
}

// TestRebase merges another writer's state with the events the ledger
// holds, keeping the newer push record.
func TestRebase(t *testing.T) {
	l := New[*ev](policy)
	u := l.Add("alice.key", "fabrikam.com", "alice@fabrikam.com")
	l.Load(u, unread.State{}, 0)
	news := map[uint64]events.Event{}
	for seq := uint64(6); seq <= 7; seq++ {
		e := events.Event{Tenant: "fabrikam.com", User: "alice@fabrikam.com", Kind: events.KindNew, Mailbox: events.Inbox}
		e.Normalize()
		news[seq] = e
		l.Apply(at(0), u, &e, &ev{seq: seq})
	}
	ds := l.Flush(at(10))
	if len(ds) != 1 {
		t.Fatalf("due %+v", ds)
	}
	l.Send(ds[0])
	r := l.Answered(at(20), u, 1, Answer{Delivered: 1})
	nine := 9
	cur := unread.State{Count: 10, Exact: true, LastSeq: 6, LastPushedCount: &nine, LastPushedAt: at(-1000)}
	l.Rebase(r.Settle, cur, 42, func(e *ev) (events.Event, error) { return news[e.seq], nil })
	got := u.State()
	if !r.Settle.Merged || u.Rev() != 42 || got.Count != 11 || got.LastSeq != 7 || *got.LastPushedCount != 2 {
		t.Fatalf("merged %+v rev %d: want 10 + the one event the other writer had not (seq 7), pushed 2 (newer than its 9)", got, u.Rev())
	}
	l.Stored(u, l.Snapshot(u), 43)
	if u.Dirty() || u.Rev() != 43 {
		t.Fatalf("after Stored: dirty %v rev %d", u.Dirty(), u.Rev())
	}
}

// TestSweepAndRelease checks which users the ledger forgets.
func TestSweepAndRelease(t *testing.T) {
	l := New[*ev](policy)
	add := func(name string, seq uint64, ms int) *User[*ev] {
		u := l.Add(name, "fabrikam.com", name+"@fabrikam.com")
		l.Load(u, unread.State{}, 0)
		e := events.Event{Tenant: "fabrikam.com", User: u.Name, Kind: events.KindSnapshot, Mailbox: events.Inbox, Unread: events.IntPtr(1)}
		l.Apply(at(ms), u, &e, &ev{seq: seq})
		return u
	}
	add("idle", 1, 0)
	add("busy", 2, 0)
	add("pending", 3, 5000)
	for _, d := range l.Flush(at(100)) {
		if d.User.Key == "pending" {
			continue
		}
		l.Send(d)
		if d.User.Key == "idle" {
			l.Settled(at(200), l.Answered(at(150), d.User, 1, Answer{Delivered: 1}).Settle, true)
		}
	}
	l.Sweep(at(-1), false)
	if l.Len() != 3 {
		t.Fatalf("%d users after a sweep with a cutoff before every event, want 3", l.Len())
	}
	l.Sweep(at(10_000), false)
	if l.User("idle") != nil || l.User("busy") == nil || l.User("pending") == nil {
		t.Fatal("the sweep should forget the idle user only")
	}
	released := l.Release()
	if len(released) != 0 || l.User("busy") == nil || l.User("pending") != nil || l.InFlight() != 1 {
		t.Fatalf("Release: %v; want the pending user (its event taken by Flush) forgotten, the one in flight kept", seqs(released))
	}
	n := 0
	l.EachHeld(func(*ev) { n++ })
	if n != 1 {
		t.Fatalf("%d events held, want busy's one in flight", n)
	}
}

// newMail applies a new message of u at seq and returns its held event
// and the event.
func newMail(l *Ledger[*ev], u *User[*ev], seq uint64, ms int) (*ev, events.Event) {
	e := events.Event{Tenant: u.Tenant, User: u.Name, Kind: events.KindNew, Mailbox: events.Inbox}
	e.Normalize()
	h := &ev{seq: seq, at: at(ms)}
	l.Apply(at(ms), u, &e, h)
	return h, e
}

// TestSettlesWrittenWhileTheLoopGoesOn checks what the ledger keeps of a
// user while its Settles are being written and the loop applies more
// events: their events stay held, a write of an older Snapshot leaves the
// newer changes to write, and a merge with another writer's state
// includes the events of every Settle not yet Settled.
func TestSettlesWrittenWhileTheLoopGoesOn(t *testing.T) {
	l := New[*ev](policy)
	u := l.Add("alice.key", "fabrikam.com", "alice@fabrikam.com")
	l.Load(u, unread.State{}, 0)
	decoded := map[*ev]events.Event{}
	mail := func(seq uint64, ms int) *ev {
		h, e := newMail(l, u, seq, ms)
		decoded[h] = e
		return h
	}
	// push takes the user's due count, sends it and has it delivered.
	push := func(ms int) *Settle[*ev] {
		ds := l.Flush(at(ms))
		if len(ds) != 1 {
			t.Fatalf("at %d ms: due %+v, want the user", ms, ds)
		}
		l.Send(ds[0])
		return l.Answered(at(ms+1), u, 1, Answer{Delivered: 1}).Settle
	}
	mail(1, 0)
	first := push(10)
	snap := l.Snapshot(u)
	if !u.Settling() || !slices.Equal(seqs(u.Held()), []uint64{1}) {
		t.Fatalf("settling %v, held %v: want event 1 held while its Settle is written", u.Settling(), seqs(u.Held()))
	}

	// The loop goes on: event 2 arrives and is pushed, and its Settle
	// waits for the first.
	mail(2, 20)
	second := push(30)
	mail(3, 40)
	if got := seqs(u.Held()); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("held %v, want 1 and 2 (being settled) and 3 (pending)", got)
	}
	l.Sweep(at(1_000_000), true)
	if released := l.Release(); l.User(u.Key) == nil || len(released) != 0 {
		t.Fatalf("a user with Settles being written was forgotten (released %v)", seqs(released))
	}

	// The first write lands: its snapshot had one event, so the user
	// still has changes to write.
	l.Stored(u, snap, 5)
	l.Settled(at(50), first, true)
	if !u.Dirty() || u.Rev() != 5 {
		t.Fatalf("dirty %v rev %d after the older snapshot was stored: want dirty at revision 5", u.Dirty(), u.Rev())
	}
	if got := seqs(u.Held()); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("held %v after the first Settle, want 2 and 3", got)
	}

	// The second write meets another writer's state (count 7 up to event
	// 1): the merge applies every held event on it, event 2 included.
	l.Rebase(second, unread.State{Count: 7, LastSeq: 1}, 9, func(h *ev) (events.Event, error) { return decoded[h], nil })
	if got := u.State(); got.Count != 9 || got.LastSeq != 3 || *got.LastPushedCount != 2 || u.Rev() != 9 || !u.Dirty() {
		t.Fatalf("merged %+v rev %d dirty %v: want 7 + events 2 and 3, pushed 2, revision 9, to be written", got, u.Rev(), u.Dirty())
	}
	l.Stored(u, l.Snapshot(u), 10)
	l.Settled(at(60), second, true)
	if u.Dirty() || u.Settling() {
		t.Fatalf("dirty %v settling %v after the last write", u.Dirty(), u.Settling())
	}

	// Settled without success puts the events back, pending.
	third := push(70)
	l.Settled(at(80), third, false)
	if got := seqs(u.Held()); u.Settling() || !slices.Equal(got, []uint64{3}) {
		t.Fatalf("held %v settling %v after a failed Settle, want 3 pending", got, u.Settling())
	}
}
