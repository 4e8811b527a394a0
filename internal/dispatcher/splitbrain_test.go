package dispatcher_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
)

// TestTwoOwnersKeepDeltaCounts runs two dispatchers that cannot see each
// other (different membership subjects): each takes every partition and
// releases the other's pin whenever it has work and no pin, so both apply
// the same partitions, turn about. Every event is a +1 change, so any
// event lost between them shows as a wrong final badge.
func TestTwoOwnersKeepDeltaCounts(t *testing.T) {
	e := newEnv(t, brokertest.WithPartitions(2), brokertest.WithListen())
	e.enableProxy()
	const users, rounds = 20, 80
	var names []string
	for i := range users {
		names = append(names, userName(i))
	}
	e.subscribe(names...)
	for i := range 2 {
		conn, err := broker.Connect(context.Background(), broker.Options{Name: fmt.Sprintf("owner-%d", i), URLs: []string{e.conn.ClientURL()}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		cfg := testConfig(prometheus.NewRegistry())
		cfg.InstanceID = fmt.Sprintf("owner-%d", i)
		cfg.MembershipSubject = fmt.Sprintf("members.%d", i)
		cfg.Coalesce.Window, cfg.Coalesce.MaxDelay = 50*time.Millisecond, 200*time.Millisecond
		e.start(conn, cfg)
	}
	for range rounds {
		var evs []events.Event
		for _, u := range names {
			evs = append(evs, newEvent(u, events.KindNew, 1, nil))
		}
		e.publish(evs...)
		time.Sleep(50 * time.Millisecond)
	}
	deadline := time.Now().Add(40 * time.Second)
	for _, u := range names {
		for e.lastPushed(u) != rounds {
			if time.Now().After(deadline) {
				t.Fatalf("%s: final badge %d, want %d; pushes %v", u, e.lastPushed(u), rounds, e.relay.pushes(deviceOf(u)))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
