package broker_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
)

// TestSecondOwnerOfADataDirectoryFailsAtOnce starts an embedded server on
// a directory, then a second one on the same directory: the second fails
// at once, naming the first's pid, and the first keeps its data; after the
// first stops, the directory can be used again.
func TestSecondOwnerOfADataDirectoryFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	first, err := broker.Connect(ctx, broker.Options{Embedded: true, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "keep"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = broker.Connect(ctx, broker.Options{Embedded: true, StoreDir: dir})
	if !errors.Is(err, broker.ErrDirInUse) {
		t.Fatalf("second owner: err = %v, want ErrDirInUse", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("second owner took %s to fail, want under 2s", took)
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("error %q does not name the holder's pid", err)
	}
	if _, err := first.JS.KeyValue(ctx, "keep"); err != nil {
		t.Fatalf("the first owner lost its bucket: %v", err)
	}
	first.Close()
	again, err := broker.Connect(ctx, broker.Options{Embedded: true, StoreDir: dir})
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	defer again.Close()
	if _, err := again.JS.KeyValue(ctx, "keep"); err != nil {
		t.Fatalf("the bucket did not survive: %v", err)
	}
}

// TestEmbeddedServerSaysWhyItCannotListen starts an embedded server on a
// port that is taken: it fails at once with the server's own reason.
func TestEmbeddedServerSaysWhyItCannotListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = broker.Connect(context.Background(), broker.Options{Embedded: true, StoreDir: filepath.Join(t.TempDir(), "data"), Listen: ln.Addr().String()})
	if err == nil {
		t.Fatal("started on a port in use")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s to fail, want the server's error at once", took)
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %q does not give the cause", err)
	}
}
