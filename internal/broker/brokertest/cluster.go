package brokertest

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/nettest"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// StartCluster starts an n-node JetStream cluster on loopback, each node
// with its own name, store folder and cluster port, all routed to each
// other, and returns the client URLs of the nodes once a meta leader exists.
// The cluster ports are chosen below the system's ephemeral port range
// (nettest.FreePorts), so that no outgoing connection of this or another
// test takes one before its node binds it.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	ports, err := nettest.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)}
	}
	urls := make([]string, n)
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("node-%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "pushproxy-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     routes,
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("configuring node %d: %v", i, err)
		}
		go srv.Start()
		t.Cleanup(srv.Shutdown)
		if !srv.ReadyForConnections(30 * time.Second) {
			t.Fatalf("node %d not ready", i)
		}
		urls[i] = srv.ClientURL()
	}
	waitForMetaLeader(t, urls)
	return urls
}

func waitForMetaLeader(t testing.TB, urls []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := broker.Connect(ctx, broker.Options{URLs: urls})
		if err == nil {
			_, err = conn.JS.AccountInfo(ctx)
			conn.Close()
		}
		cancel()
		if err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatal("the cluster elected no JetStream meta leader within 60s")
}
