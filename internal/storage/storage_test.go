package storage_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/storage"
)

var when = time.Date(2026, 4, 5, 6, 7, 8, 0, time.UTC)

// configBucket starts a provisioned server and returns its config bucket,
// without storage settings (as an upgraded deployment has it).
func configBucket(t *testing.T) (*broker.Conn, jetstream.KeyValue) {
	t.Helper()
	conn := brokertest.Start(t)
	kv, err := conn.JS.KeyValue(context.Background(), broker.BucketConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(context.Background(), storage.Key); err != nil {
		t.Fatal(err)
	}
	return conn, kv
}

func TestParseEncoding(t *testing.T) {
	tests := []struct {
		in   string
		want storage.Encoding
		ok   bool
	}{
		{"json", storage.JSON, true},
		{" Compact ", storage.Compact, true},
		{"binary", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := storage.ParseEncoding(tt.in)
		if got != tt.want || (err == nil) != tt.ok || err != nil && !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("ParseEncoding(%q) = %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestSetAndRead(t *testing.T) {
	_, kv := configBucket(t)
	ctx := context.Background()
	st, stored, err := storage.Read(ctx, kv)
	if err != nil || stored || st != storage.Default() || st.Encoding != storage.JSON {
		t.Fatalf("Read without settings = %+v, %v, %v; want the JSON default", st, stored, err)
	}
	steps := []struct {
		enc         storage.Encoding
		wantChanged bool
	}{
		{storage.Compact, true},
		{storage.Compact, false},
		{storage.JSON, true},
		{storage.Compact, true},
	}
	for i, s := range steps {
		got, changed, err := storage.SetEncoding(ctx, kv, s.enc, storage.ByOperator, when.Add(time.Duration(i)*time.Minute))
		if err != nil || changed != s.wantChanged || got.Encoding != s.enc {
			t.Fatalf("step %d: SetEncoding(%s) = %+v, %v, %v; want changed %v", i, s.enc, got, changed, err, s.wantChanged)
		}
		read, stored, err := storage.Read(ctx, kv)
		if err != nil || !stored || read != got {
			t.Fatalf("step %d: Read = %+v, %v, %v; want %+v", i, read, stored, err, got)
		}
	}
	if _, _, err := storage.SetEncoding(ctx, kv, "binary", storage.ByOperator, when); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("SetEncoding(binary) = %v, want ErrInvalid", err)
	}
	// Settings nobody can read are an error, not a silent default.
	if _, err := kv.Put(ctx, storage.Key, []byte(`{"encoding":"zip"}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := storage.Read(ctx, kv); err == nil {
		t.Fatal("Read of an unknown encoding succeeded")
	}
}

// TestInitNew: a new installation's settings are compact, and InitNew
// never overwrites settings an operator made.
func TestInitNew(t *testing.T) {
	_, kv := configBucket(t)
	ctx := context.Background()
	if err := storage.InitNew(ctx, kv, when); err != nil {
		t.Fatal(err)
	}
	st, _, err := storage.Read(ctx, kv)
	if err != nil || st.Encoding != storage.Compact || st.By != storage.ByNewInstallation {
		t.Fatalf("after InitNew: %+v, %v", st, err)
	}
	if _, _, err := storage.SetEncoding(ctx, kv, storage.JSON, storage.ByOperator, when); err != nil {
		t.Fatal(err)
	}
	if err := storage.InitNew(ctx, kv, when); err != nil {
		t.Fatal(err)
	}
	if st, _, err := storage.Read(ctx, kv); err != nil || st.Encoding != storage.JSON {
		t.Fatalf("InitNew over an operator's choice: %+v, %v", st, err)
	}
}

// TestSwitchFollows: a Switch says JSON until settings are stored, reads
// them on first use (the writer waits), and follows a change after its
// refresh without holding a writer up.
func TestSwitchFollows(t *testing.T) {
	conn, kv := configBucket(t)
	ctx := context.Background()
	sw := storage.NewSwitch(conn.JS, broker.BucketConfig).RereadEvery(50 * time.Millisecond)
	if got := sw.Encoding(ctx); got != storage.JSON {
		t.Fatalf("without settings: %s, want json", got)
	}
	if _, _, err := storage.SetEncoding(ctx, kv, storage.Compact, storage.ByOperator, when); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sw, storage.Compact)
	if _, _, err := storage.SetEncoding(ctx, kv, storage.JSON, storage.ByOperator, when); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sw, storage.JSON)

	// A new switch reads the settings before its first answer.
	if _, _, err := storage.SetEncoding(ctx, kv, storage.Compact, storage.ByOperator, when); err != nil {
		t.Fatal(err)
	}
	fresh := storage.NewSwitch(conn.JS, broker.BucketConfig)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got := fresh.Encoding(ctx); got != storage.Compact {
				t.Errorf("first answer %s, want compact", got)
			}
		})
	}
	wg.Wait()

	// Settings that cannot be read leave the encoding as it was.
	waitFor(t, sw, storage.Compact)
	if _, err := kv.Put(ctx, storage.Key, []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	for range 5 {
		if got := sw.Encoding(ctx); got != storage.Compact {
			t.Fatalf("after unreadable settings: %s, want the compact it had", got)
		}
		time.Sleep(60 * time.Millisecond)
	}
}

// waitFor asks sw until it says want, as writers ask before each write.
func waitFor(t *testing.T, sw *storage.Switch, want storage.Encoding) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for sw.Encoding(context.Background()) != want {
		if time.Now().After(deadline) {
			t.Fatalf("the switch did not follow the settings to %s", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFixedAndNil(t *testing.T) {
	var none *storage.Switch
	if got := none.Encoding(context.Background()); got != storage.JSON {
		t.Fatalf("a nil switch says %s, want json", got)
	}
	if got := storage.Fixed(storage.Compact).Encoding(context.Background()); got != storage.Compact {
		t.Fatalf("Fixed(compact) says %s", got)
	}
}
