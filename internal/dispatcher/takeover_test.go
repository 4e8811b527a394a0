package dispatcher_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/events"
)

// owner is a dispatcher a takeover test starts on its own connection, so
// that closing the connection kills it without any goodbye.
type owner struct {
	conn *broker.Conn
	run  *running
}

// startOwner starts a dispatcher named id on its own connection; edit
// changes its configuration.
func (e *env) startOwner(t *testing.T, id string, edit func(*dispatcher.Config)) owner {
	t.Helper()
	return e.startOwnerAt(t, id, e.conn.ClientURL(), edit)
}

// startOwnerAt is startOwner connecting to url (a proxy, say).
func (e *env) startOwnerAt(t *testing.T, id, url string, edit func(*dispatcher.Config)) owner {
	t.Helper()
	conn, err := broker.Connect(context.Background(), broker.Options{Name: id, URLs: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !conn.NC.IsClosed() {
			conn.NC.Close()
		}
	})
	cfg := testConfig()
	cfg.InstanceID = id
	if edit != nil {
		edit(&cfg)
	}
	return owner{conn: conn, run: e.start(conn, cfg)}
}

// kill closes the owner's connection first, so it acknowledges nothing
// more, then stops it.
func (o owner) kill() {
	o.conn.NC.Close()
	o.run.cancel()
}

// deltaUsers subscribes n users and returns their names.
func (e *env) deltaUsers(n int) []string {
	var names []string
	for i := range n {
		names = append(names, userName(i))
	}
	e.subscribe(names...)
	return names
}

// startBehindProxy starts, on a one-partition stream, one dispatcher
// connected through a proxy that can drop messages on their way to it
// (AckWait 1 s), with three users whose first change has been pushed.
func startBehindProxy(t *testing.T) (*env, *brokertest.Proxy, []string, owner) {
	t.Helper()
	e := newEnv(t, brokertest.WithPartitions(1), brokertest.WithListen())
	e.enableProxy()
	proxy := brokertest.StartProxy(t, e.conn.ClientURL())
	names := e.deltaUsers(3)
	d1 := e.startOwnerAt(t, "d1", proxy.URL(), func(cfg *dispatcher.Config) {
		fastCoalescing(cfg)
		cfg.AckWait = time.Second
	})
	e.publishRound(names)
	e.wantFinalBadges(t, names, 1)
	return e, proxy, names, d1
}

// userToken is the last token of user's stored subjects
// (mail.<partition>.<tenant>.<user>), with its dot.
func (e *env) userToken(user string) string {
	s := e.keyer.Subject(tenant, user)
	return s[strings.LastIndexByte(s, '.'):]
}

// publishRound stores one +1 change (new mail, no count) per user.
func (e *env) publishRound(names []string) {
	var evs []events.Event
	for _, u := range names {
		evs = append(evs, newEvent(u, events.KindNew, 1, nil))
	}
	e.publish(evs...)
}

// wantFinalBadges waits until every user's last badge is want and checks
// that no device saw its count go backwards.
func (e *env) wantFinalBadges(t *testing.T, names []string, want int) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for _, u := range names {
		for e.lastPushed(u) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: final badge %d, want %d; pushes %v", u, e.lastPushed(u), want, e.relay.pushes(deviceOf(u)))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, u := range names {
		p := e.relay.pushes(deviceOf(u))
		for i := 1; i < len(p); i++ {
			if p[i] < p[i-1] {
				t.Fatalf("%s saw its count go backwards: %v", u, p)
			}
		}
	}
}

// fastCoalescing makes pushes go out quickly.
func fastCoalescing(cfg *dispatcher.Config) {
	cfg.Coalesce.Window, cfg.Coalesce.MaxDelay = 100*time.Millisecond, 400*time.Millisecond
}

// TestRepeatedDeathsKeepDeltaCounts kills a dispatcher without any goodbye
// again and again while events keep coming, and starts a new one each
// time. Every event is a change without a count (+1 new mail), so an event
// applied out of order or lost shows as a wrong final badge: the
// unacknowledged events of the dead ones must be applied, in stream order,
// by whoever takes their partitions over.
func TestRepeatedDeathsKeepDeltaCounts(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(6), brokertest.WithListen())
	e.enableProxy()
	const users, rounds, kills = 30, 40, 6
	names := e.deltaUsers(users)
	started := 0
	next := func() owner {
		started++
		return e.startOwner(t, "d"+string(rune('a'+started)), fastCoalescing)
	}
	members := []owner{next(), next(), next()}
	killed := 0
	for round := range rounds {
		e.publishRound(names)
		time.Sleep(15 * time.Millisecond)
		if round%(rounds/kills) == rounds/kills-1 && killed < kills {
			members[0].kill() // the oldest, abruptly
			members = append(members[1:], next())
			killed++
		}
	}
	e.wantFinalBadges(t, names, rounds)
}

// TestTwoOwnersKeepDeltaCounts runs two dispatchers that cannot see each
// other (different membership subjects): each takes every partition and
// releases the other's pin when it has work and no pin, so both apply the
// same partitions with overlapping catch-ups. Every event is a +1 change,
// so any event lost between them shows as a wrong final badge.
func TestTwoOwnersKeepDeltaCounts(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(2), brokertest.WithListen())
	e.enableProxy()
	const users, rounds = 20, 80
	names := e.deltaUsers(users)
	for _, id := range []string{"owner-a", "owner-b"} {
		e.startOwner(t, id, func(cfg *dispatcher.Config) {
			cfg.MembershipSubject = "members." + id
			cfg.Coalesce.Window, cfg.Coalesce.MaxDelay = 50*time.Millisecond, 200*time.Millisecond
		})
	}
	for range rounds {
		e.publishRound(names)
		time.Sleep(50 * time.Millisecond)
	}
	e.wantFinalBadges(t, names, rounds)
}

// TestLostDeliveryKeepsDeltaCounts loses one delivery on its way to the
// only dispatcher (the server counts it delivered, the dispatcher never
// sees it, as after a broken connection or a slow-consumer drop) and then
// stores the user's next change. Applying that next change at once would
// record the user's state past the lost one, and its redelivery after
// AckWait would then be skipped as already applied: the badge would stay
// one short forever. The gap in the consumer's delivery sequence must make
// the dispatcher read the lost event from the stream first.
func TestLostDeliveryKeepsDeltaCounts(t *testing.T) {
	e, proxy, names, d1 := startBehindProxy(t)
	const missed = "pushproxy_dispatcher_missed_deliveries_total"
	if n := metricValue(t, d1.run.reg, missed); n != 0 {
		t.Fatalf("%s = %v before any delivery was lost", missed, n)
	}

	// Stored subjects carry the partition: mail.<partition>.<tenant>.<user>.
	lostUser := e.userToken(names[1])
	proxy.DropNext(func(subject, reply string) bool {
		return strings.HasSuffix(subject, lostUser) && strings.HasPrefix(reply, "$JS.ACK.MAIL.dispatcher-")
	})
	e.publishRound(names)
	waitFor(t, "the delivery to be dropped", func() bool { return len(proxy.Dropped()) == 1 })
	e.publishRound(names)
	e.wantFinalBadges(t, names, 3)
	if n := metricValue(t, d1.run.reg, missed); n != 1 {
		t.Errorf("%s = %v, want 1", missed, n)
	}
	// Past two AckWaits the redelivery has come and gone: still right.
	time.Sleep(2 * time.Second)
	e.wantFinalBadges(t, names, 3)
}

// TestLostCatchUpDeliveryKeepsDeltaCounts loses, after a durable delivery,
// deliveries of the catch-up read as well: the catch-up must notice what
// it lost and read again, or the event would be skipped as applied when it
// is redelivered (the badge one short for good). Losing its first delivery
// leaves a gap in its consumer sequence; losing all of a read's
// deliveries leaves a fetch that gets nothing.
func TestLostCatchUpDeliveryKeepsDeltaCounts(t *testing.T) {
	const durable = "$JS.ACK.MAIL.dispatcher-"
	tests := []struct {
		name string
		lost int  // catch-up deliveries lost, the first ones
		any  bool // of any user, not only the one whose delivery was lost
	}{
		{"its delivery of the lost event", 1, false},
		{"every delivery of its first reads", 8, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, proxy, names, _ := startBehindProxy(t)

			lostUser := e.userToken(names[1])
			drops := []func(subject, reply string) bool{func(subject, reply string) bool {
				return strings.HasSuffix(subject, lostUser) && strings.HasPrefix(reply, durable)
			}}
			for range tt.lost {
				drops = append(drops, func(subject, reply string) bool {
					return (tt.any || strings.HasSuffix(subject, lostUser)) &&
						strings.HasPrefix(reply, "$JS.ACK.MAIL.") && !strings.HasPrefix(reply, durable)
				})
			}
			proxy.DropInOrder(drops...)
			e.publishRound(names)
			waitFor(t, "the durable's and the catch-up's deliveries to be dropped", func() bool { return len(proxy.Dropped()) >= 2 })
			e.publishRound(names)
			e.wantFinalBadges(t, names, 3)
			// Past two AckWaits the redelivery has come and gone: still right.
			time.Sleep(2 * time.Second)
			e.wantFinalBadges(t, names, 3)
		})
	}
}

// TestEventTheConsumerSkippedIsReadFromTheStream takes one event out of
// the consumer's hands altogether: its delivery is lost on the way and
// acknowledged by someone else, so the consumer neither redelivers it nor
// counts it unacknowledged, and the takeover's catch-up starts past it.
// This stands for any server that tells the dispatcher something wrong
// about its consumer (one just back from a stop, say). Only the stream
// still shows the event: the user's state must be checked against it, or
// the badge is one short for good.
func TestEventTheConsumerSkippedIsReadFromTheStream(t *testing.T) {
	e, proxy, names, d1 := startBehindProxy(t)

	skippedUser := e.userToken(names[1])
	replies := make(chan string, 1)
	proxy.DropNext(func(subject, reply string) bool {
		if !strings.HasSuffix(subject, skippedUser) || !strings.HasPrefix(reply, "$JS.ACK.MAIL.dispatcher-") {
			return false
		}
		replies <- reply
		return true
	})
	e.publish(newEvent(names[1], events.KindNew, 1, nil))
	if err := e.conn.NC.Publish(<-replies, []byte("+ACK")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the skipped event to be acknowledged", func() bool {
		pending, ack := ackPending(t, e.conn.JS)
		return pending == 0 && ack == 0
	})

	e.publishRound(names)
	e.wantFinalBadges(t, []string{names[0], names[2]}, 2)
	e.wantFinalBadges(t, names[1:2], 3)
	const gaps = "pushproxy_dispatcher_gap_events_read_total"
	if n := metricValue(t, d1.run.reg, gaps); n != 1 {
		t.Errorf("%s = %v, want 1", gaps, n)
	}
}
