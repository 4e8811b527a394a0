package dispatcher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

// TestAnAbandonedPinIsReleased: the consumer's pin went to a pull request
// nobody listens to (the server pins the first waiting request before it
// checks that anybody listens, and a worker handing over may leave one),
// with an event waiting. The next owner, which like a dispatcher just
// started does not yet release the pins of others it cannot tell gone,
// must still release this one, which takes nothing while there is work,
// and get the event well before the pin's TTL (an hour here).
func TestAnAbandonedPinIsReleased(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := brokertest.Start(t, brokertest.WithPartitions(1))
	d, err := New(ctx, Config{Tokens: tokens{}, Heartbeat: 50 * time.Millisecond, PinnedTTL: time.Hour}, conn, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// A view of the others not yet stable: no pin counts as a dead one's.
	d.members = newMembership(d.nc, d.cfg.MembershipSubject, d.cfg.InstanceID, d.cfg.Heartbeat, d.log)
	name := consumerName(d.cfg.ConsumerPrefix, 0)
	cons, err := d.js.Consumer(ctx, d.stream, name)
	if err != nil {
		t.Fatal(err)
	}

	// An event, then a pull request whose reply subject nobody listens
	// to: the server pins it (its advisory says so) and drops it.
	pinned, err := d.nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.PINNED." + d.stream + "." + name)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Unsubscribe()
	storeMail(t, d, 1)
	waitConsumer(t, cons, "the event stored", func(info *jetstream.ConsumerInfo) bool { return info.NumPending == 1 })
	pull := fmt.Sprintf(`{"batch":1,"expires":%d,"group":%q}`, int64(time.Hour), d.cfg.PriorityGroup)
	if err := d.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+d.stream+"."+name, "_INBOX.nobody", []byte(pull)); err != nil {
		t.Fatal(err)
	}
	if _, err := pinned.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no pin given to the pull request nobody listens to: %v", err)
	}

	w := d.newWorker(0, 0)
	go w.run(ctx)
	waitConsumer(t, cons, "the event delivered to the next owner", func(*jetstream.ConsumerInfo) bool { return w.heldN.Load() == 1 })
	w.requestDrop()
	<-w.done
}

// waitConsumer polls cons's info until cond holds, for up to 10 s.
func waitConsumer(t *testing.T, cons jetstream.Consumer, what string, cond func(*jetstream.ConsumerInfo) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if cond(info) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %d pending, %d unacknowledged, %d pull requests waiting, groups %+v", what, info.NumPending, info.NumAckPending, info.NumWaiting, info.PriorityGroups)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
