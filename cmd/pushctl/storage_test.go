package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/storage"
)

func TestStorageEncoding(t *testing.T) {
	conn, url := startNATS(t)
	line := func(name, value string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^` + name + ` +: ` + regexp.QuoteMeta(value) + `$`)
	}

	r := pushctl(t, "storage", "encoding", url)
	if r.code != 0 || !line("Encoding", "compact").MatchString(r.stdout) || !line("ChangedBy", storage.ByNewInstallation).MatchString(r.stdout) {
		t.Fatalf("a new installation: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = pushctl(t, "storage", "encoding", "json", url)
	if r.code != 0 || !line("Encoding", "json").MatchString(r.stdout) || !line("ChangedBy", storage.ByOperator).MatchString(r.stdout) {
		t.Fatalf("switch to json: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	again := pushctl(t, "storage", "encoding", url, "JSON")
	if again.code != 0 || again.stdout != r.stdout || !strings.Contains(again.stderr, "nothing changed") {
		t.Fatalf("json again: %d\n%s%s", again.code, again.stdout, again.stderr)
	}

	r = pushctl(t, "storage", "encoding", "compact", "--json", "--listen", "100ms", url)
	var st storage.Settings
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || st.Encoding != storage.Compact || st.ChangedAt.IsZero() {
		t.Fatalf("compact --json: %d %q %v", r.code, r.stdout, err)
	}

	// A deployment upgraded from a release before the setting.
	kv, err := conn.JS.KeyValue(context.Background(), broker.BucketConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(context.Background(), storage.Key); err != nil {
		t.Fatal(err)
	}
	r = pushctl(t, "storage", "encoding", url)
	if r.code != 0 || !line("Encoding", "json").MatchString(r.stdout) || !strings.Contains(r.stdout, "ChangedBy   : nobody") {
		t.Fatalf("an upgraded deployment: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestStorageEncodingChecksDispatchers: the switch to compact is refused
// while a dispatcher of an earlier release (its heartbeat without reads)
// runs, unless forced, and goes ahead when every dispatcher heard reads
// compact.
func TestStorageEncodingChecksDispatchers(t *testing.T) {
	conn, url := startNATS(t)
	encoding := func() storage.Encoding {
		kv, err := conn.JS.KeyValue(context.Background(), broker.BucketConfig)
		if err != nil {
			t.Fatal(err)
		}
		st, _, err := storage.Read(context.Background(), kv)
		if err != nil {
			t.Fatal(err)
		}
		return st.Encoding
	}
	// announce has a dispatcher reading reads announce itself every 100 ms
	// until the returned function is called.
	announce := func(id string, reads []storage.Encoding) func() {
		data, _ := json.Marshal(dispatcher.Announcement{ID: id, Owns: []int{0}, Reads: reads})
		done, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				if err := conn.NC.Publish(dispatcher.DefaultMembershipSubject, data); err != nil {
					t.Error(err)
				}
				select {
				case <-done:
					return
				case <-tick.C:
				}
			}
		}()
		return func() { close(done); <-stopped }
	}
	if r := pushctl(t, "storage", "encoding", "json", url); r.code != 0 {
		t.Fatalf("switch to json: %d %s", r.code, r.stderr)
	}

	stopOld := announce("dispatcher-old", nil)
	stopNew := announce("dispatcher-new", storage.Reads())
	r := pushctl(t, "storage", "encoding", "compact", "--listen", "1s", url)
	oneLineError(t, r, 1, "1 of 2 dispatchers read only json")
	if !strings.Contains(r.stderr, "dispatcher-old") || encoding() != storage.JSON {
		t.Fatalf("with an old dispatcher running: stderr %q, encoding %s; want it named, still json", r.stderr, encoding())
	}
	if r := pushctl(t, "storage", "encoding", "compact", "--force", url); r.code != 0 || encoding() != storage.Compact {
		t.Fatalf("--force: code %d stderr %q, encoding %s", r.code, r.stderr, encoding())
	}
	stopOld()

	if r := pushctl(t, "storage", "encoding", "json", url); r.code != 0 {
		t.Fatalf("back to json: %d %s", r.code, r.stderr)
	}
	r = pushctl(t, "storage", "encoding", "compact", "--listen", "1s", url)
	stopNew()
	if r.code != 0 || !strings.Contains(r.stderr, "All 1 dispatchers heard read compact") || encoding() != storage.Compact {
		t.Fatalf("with every dispatcher upgraded: code %d stderr %q, encoding %s", r.code, r.stderr, encoding())
	}
}

func TestStorageEncodingErrors(t *testing.T) {
	_, url := startNATS(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown encoding", []string{"storage", "encoding", "zip", url}, 2, "neither json nor compact"},
		{"two encodings", []string{"storage", "encoding", "json", "compact", url}, 2, "at most one encoding"},
		{"unknown flag", []string{"storage", "encoding", "--bogus", url}, 2, "unknown flag --bogus"},
		{"unreachable NATS", []string{"storage", "encoding", "--nats-url", "nats://127.0.0.1:1"}, 1, "connecting to NATS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oneLineError(t, pushctl(t, tt.args...), tt.code, tt.want)
		})
	}
	if r := pushctl(t, "storage", "encoding", "--help"); r.code != 0 || !strings.Contains(r.stdout+r.stderr, "Switching back to json is safe") {
		t.Fatalf("--help: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
