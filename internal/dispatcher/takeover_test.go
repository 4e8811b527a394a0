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
	var names []string
	for i := range users {
		names = append(names, userName(i))
	}
	e.subscribe(names...)

	type member struct {
		conn *broker.Conn
		run  *running
	}
	started := 0
	startOne := func() member {
		started++
		conn, err := broker.Connect(context.Background(), broker.Options{Name: fmt.Sprintf("dispatcher-%d", started), URLs: []string{e.conn.ClientURL()}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if !conn.NC.IsClosed() {
				conn.NC.Close()
			}
		})
		cfg := testConfig(prometheus.NewRegistry())
		cfg.Coalesce.Window, cfg.Coalesce.MaxDelay = 100*time.Millisecond, 400*time.Millisecond
		cfg.InstanceID = fmt.Sprintf("d%02d", started)
		return member{conn: conn, run: e.start(conn, cfg)}
	}
	members := []member{startOne(), startOne(), startOne()}

	killed := 0
	for round := range rounds {
		var evs []events.Event
		for _, u := range names {
			evs = append(evs, newEvent(u, events.KindNew, 1, nil))
		}
		e.publish(evs...)
		time.Sleep(15 * time.Millisecond)
		if round%(rounds/kills) == rounds/kills-1 && killed < kills {
			// Kill the oldest member abruptly: its connection goes first,
			// so it acknowledges nothing more.
			victim := members[0]
			victim.conn.NC.Close()
			victim.run.cancel()
			members = append(members[1:], startOne())
			killed++
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, u := range names {
		for e.lastPushed(u) != rounds {
			if time.Now().After(deadline) {
				t.Fatalf("%s: final badge %d, want %d; pushes %v", u, e.lastPushed(u), rounds, e.relay.pushes(deviceOf(u)))
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
