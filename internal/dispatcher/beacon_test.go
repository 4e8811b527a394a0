package dispatcher

import (
	"context"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

func TestKeyToken(t *testing.T) {
	for _, tt := range []struct{ id, want string }{
		{"dispatcher-1", "dispatcher-1"},
		{"host.example.com-1a2b", "host_example_com-1a2b"},
		{"pod 7/ä*>", "pod_7____"},
		{"", "_"},
	} {
		if got := keyToken(tt.id); got != tt.want {
			t.Errorf("keyToken(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}

// TestBeaconIsWrittenAtOpen: openBeacon writes the dispatcher's key in
// the leases bucket at once, and says what to do when the bucket is
// missing.
func TestBeaconIsWrittenAtOpen(t *testing.T) {
	ctx := context.Background()
	conn := brokertest.Start(t)
	if _, err := openBeacon(ctx, conn.JS, "host.example.com-7"); err != nil {
		t.Fatal(err)
	}
	kv, err := conn.JS.KeyValue(ctx, broker.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "dispatchers.host_example_com-7")
	if err != nil {
		t.Fatalf("the beacon's key: %v", err)
	}
	if string(e.Value()) != "host.example.com-7" {
		t.Errorf("the beacon holds %q, want the instance id", e.Value())
	}

	if err := conn.JS.DeleteKeyValue(ctx, broker.BucketLeases); err != nil {
		t.Fatal(err)
	}
	if _, err := openBeacon(ctx, conn.JS, "d"); err == nil || !strings.Contains(err.Error(), "provision the layout again") {
		t.Errorf("openBeacon without the bucket: %v, want it to say to provision again", err)
	}
}
