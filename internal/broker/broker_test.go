package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/logtest"
	"github.com/pushproxy/pushproxy/internal/storage"
)

func TestProvisionIsIdempotentAndReady(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	key1, err := broker.SubjectKey(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.Provision(ctx, conn.JS, broker.DefaultLayout()); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	key2, err := broker.SubjectKey(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if string(key1) != string(key2) {
		t.Fatal("subject key changed on re-provisioning")
	}
	if err := broker.Ready(ctx, conn.JS); err != nil {
		t.Fatalf("ready: %v", err)
	}
}

func TestReadyNamesWhatIsMissing(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	if err := conn.JS.DeleteStream(ctx, broker.StreamSent); err != nil {
		t.Fatal(err)
	}
	err := broker.Ready(ctx, conn.JS)
	if err == nil || !strings.Contains(err.Error(), "stream PUSH_SENT") {
		t.Fatalf("Ready() = %v, want it to name stream PUSH_SENT", err)
	}
}

func TestMailStreamPartitionsAndDedups(t *testing.T) {
	const partitions = 4
	conn := brokertest.Start(t, brokertest.WithPartitions(partitions))
	k := brokertest.Keyer(t, conn)
	ctx := context.Background()

	subject := k.Subject("fabrikam.com", "Alice@Fabrikam.com")
	for i := 0; i < 2; i++ {
		ack, err := conn.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: []byte(`{}`), Header: nats.Header{jetstream.MsgIDHeader: []string{"same-change"}}})
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 && !ack.Duplicate {
			t.Fatal("second publish with the same Nats-Msg-Id was not flagged duplicate")
		}
	}
	stream, err := conn.JS.Stream(ctx, broker.StreamMail)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(msg.Subject, ".")
	if len(parts) != 4 || parts[0] != "mail" || parts[2] != "fabrikam_com" || parts[3] != k.UserToken("fabrikam.com", "alice@fabrikam.com") {
		t.Fatalf("stored subject %q is not mail.<partition>.<tenant>.<user>", msg.Subject)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1 after a duplicate", info.State.Msgs)
	}
	// The same user always lands in the same partition.
	if _, err := conn.JS.Publish(ctx, subject, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	msg2, err := stream.GetMsg(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if msg2.Subject != msg.Subject {
		t.Fatalf("same user stored under %q then %q", msg.Subject, msg2.Subject)
	}
}

func TestConnectWithoutServerFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := broker.Connect(ctx, broker.Options{}); err == nil {
		t.Fatal("Connect with no URL and no embedded server succeeded")
	}
	if _, err := broker.Connect(ctx, broker.Options{URLs: []string{"nats://127.0.0.1:1"}}); err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
}

func TestProvisionThreeReplicasOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	urls := brokertest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := broker.Connect(ctx, broker.Options{URLs: urls})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	layout := broker.DefaultLayout()
	layout.Replicas = 3
	if err := broker.Provision(ctx, conn.JS, layout); err != nil {
		t.Fatalf("provisioning with 3 replicas: %v", err)
	}
	stream, err := conn.JS.Stream(ctx, broker.StreamMail)
	if err != nil {
		t.Fatal(err)
	}
	if got := stream.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("MAIL has %d replicas, want 3", got)
	}
	if err := broker.Ready(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}
}

func TestProvisionThreeReplicasOnOneServerFails(t *testing.T) {
	conn := brokertest.Start(t)
	layout := broker.DefaultLayout()
	layout.Replicas = 3
	layout.Partitions = 2
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, conn.JS, layout); err == nil {
		t.Fatal("3 replicas on a single server were accepted")
	}
}

// TestProvisionStorageEncoding: provisioning that creates the installation
// records the compact encoding; provisioning a deployment of an earlier
// release (any of its buckets exists, without storage settings) records
// nothing, so that its writers go on writing JSON until an operator
// switches.
func TestProvisionStorageEncoding(t *testing.T) {
	ctx := context.Background()
	earlier := func(bucket string) func(jetstream.JetStream) error {
		return func(js jetstream.JetStream) error {
			_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket})
			return err
		}
	}
	tests := []struct {
		name   string
		before func(jetstream.JetStream) error
		want   storage.Encoding
		stored bool
	}{
		{"a new installation", func(jetstream.JetStream) error { return nil }, storage.Compact, true},
		{"an earlier release's config bucket", earlier(broker.BucketConfig), storage.JSON, false},
		{"an earlier release's unread bucket", earlier(broker.BucketUnread), storage.JSON, false},
		{"an earlier release's subscriptions bucket", earlier(broker.BucketSubscriptions), storage.JSON, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := broker.Connect(ctx, broker.Options{Name: t.Name(), Embedded: true, StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(conn.Close)
			if err := tt.before(conn.JS); err != nil {
				t.Fatal(err)
			}
			for range 2 { // provisioning again changes nothing
				if err := broker.Provision(ctx, conn.JS, broker.DefaultLayout()); err != nil {
					t.Fatal(err)
				}
				kv, err := conn.JS.KeyValue(ctx, broker.BucketConfig)
				if err != nil {
					t.Fatal(err)
				}
				st, stored, err := storage.Read(ctx, kv)
				if err != nil || st.Encoding != tt.want || stored != tt.stored {
					t.Fatalf("storage settings %+v, stored %v, %v; want %s, stored %v", st, stored, err, tt.want, tt.stored)
				}
			}
		})
	}
}

// TestClientLeavesAServerThatStopsAnswering freezes everything a server
// sends a client, the connection left open, as a server stopped with
// SIGSTOP does: the client must count the connection stale and drop it
// within seconds. With the library's ping defaults (2 minutes, 2
// outstanding) it stayed up to 6 minutes.
func TestClientLeavesAServerThatStopsAnswering(t *testing.T) {
	srv := brokertest.Start(t, brokertest.WithListen())
	proxy := brokertest.StartProxy(t, srv.ClientURL())
	conn, err := broker.Connect(context.Background(), broker.Options{Name: "frozen", URLs: []string{proxy.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	dropped := make(chan error, 1)
	conn.NC.SetDisconnectErrHandler(func(_ *nats.Conn, err error) {
		select {
		case dropped <- err:
		default:
		}
	})
	proxy.Freeze()
	const bound = 20 * time.Second // 4 to 6 s expected; the bound only tells the two apart
	select {
	case err := <-dropped:
		if !errors.Is(err, nats.ErrStaleConnection) {
			t.Errorf("disconnected with %v, want %v", err, nats.ErrStaleConnection)
		}
	case <-time.After(bound):
		t.Fatalf("still connected %s after the server stopped answering", bound)
	}
}

// TestConnectionLossAndReturnAreLogged: an operator reading a daemon's
// log sees when its NATS connection went stale and when it came back.
func TestConnectionLossAndReturnAreLogged(t *testing.T) {
	srv := brokertest.Start(t, brokertest.WithListen())
	proxy := brokertest.StartProxy(t, srv.ClientURL())
	var logs logtest.Buffer
	conn, err := broker.Connect(context.Background(), broker.Options{Name: "cut", URLs: []string{proxy.URL()}, Log: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	waitForLog := func(words ...string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !containsAll(logs.String(), words) {
			if time.Now().After(deadline) {
				t.Fatalf("no log line with %q; the log: %q", words, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	proxy.Freeze()
	waitForLog(`"level":"warn"`, "lost the connection to NATS; reconnecting", "stale connection")
	proxy.Thaw()
	waitForLog(`"level":"info"`, "reconnected to NATS", `"server":"`+proxy.URL())
	conn.Close()
	if n := strings.Count(logs.String(), "lost the connection"); n != 1 {
		t.Errorf("%d lines of a lost connection, want 1 (closing is not one); the log: %q", n, logs.String())
	}
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}
