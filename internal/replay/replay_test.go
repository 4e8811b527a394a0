package replay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/replay"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// loadSequence reads a test sequence: one stored message per line, with its
// stream sequence, stored time, and either an event or raw bytes.
func loadSequence(t *testing.T, name string) []replay.Message {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []replay.Message
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Seq    uint64          `json:"seq"`
			Stored time.Time       `json:"stored"`
			Event  json.RawMessage `json:"event"`
			Raw    string          `json:"raw"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		data := []byte(line.Raw)
		if line.Event != nil {
			data = line.Event
		}
		out = append(out, replay.Message{Seq: line.Seq, Stored: line.Stored, Data: data})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestComputeGolden(t *testing.T) {
	msgs := loadSequence(t, "alice.ndjson")
	r := replay.Compute(msgs, replay.Options{Tenant: "fabrikam.com", User: "alice@fabrikam.com",
		Coalesce: coalesce.Config{Window: 300 * time.Millisecond, Debounce: 2 * time.Second, MaxDelay: 10 * time.Second}})
	var b bytes.Buffer
	if err := r.Format(&b); err != nil {
		t.Fatal(err)
	}
	golden(t, "alice.golden", b.Bytes())

	if r.Final.Count != 5 || !r.Final.Exact || r.Final.LastSeq != 10 {
		t.Errorf("final state %+v", r.Final)
	}
	var pushed []int
	for _, p := range r.Pushes {
		if !p.Skip {
			pushed = append(pushed, p.Count)
		}
	}
	if len(pushed) == 0 || pushed[len(pushed)-1] != r.Final.Count {
		t.Errorf("pushes %v do not end with the final count %d", pushed, r.Final.Count)
	}
}

func TestRead(t *testing.T) {
	conn := brokertest.Start(t)
	keyer := brokertest.Keyer(t, conn)
	ctx := context.Background()
	opts := replay.Options{Tenant: "fabrikam.com", User: "alice@fabrikam.com"}

	if _, err := replay.Read(ctx, conn.JS, keyer, opts); !errors.Is(err, replay.ErrNoEvents) {
		t.Fatalf("Read on an empty stream: %v", err)
	}

	publish := func(tenant, user string, n int) {
		t.Helper()
		e := events.Event{Tenant: tenant, User: user, Kind: events.KindNew, ChangeID: user + "-" + string(rune('a'+n)), OccurredAt: time.Now()}
		e.Normalize()
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.JS.Publish(ctx, keyer.Subject(tenant, user), data); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 300 {
		publish("fabrikam.com", "alice@fabrikam.com", i%20)
		publish("fabrikam.com", "bob@fabrikam.com", i%20)
	}
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	for i := range 5 {
		publish("fabrikam.com", "ALICE@fabrikam.com", i)
		publish("contoso.com", "alice@contoso.com", i)
	}

	var progress [][2]int // done, total after each event
	withProgress := opts
	withProgress.Progress = func(done, total int) { progress = append(progress, [2]int{done, total}) }
	all, err := replay.Read(ctx, conn.JS, keyer, withProgress)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 305 {
		t.Fatalf("read %d messages, want 305 of alice's", len(all))
	}
	// Progress counts every event and knows the total from the first.
	if len(progress) != 305 || progress[0] != [2]int{1, 305} || progress[304] != [2]int{305, 305} {
		t.Fatalf("progress reported %d times, first %v, last %v", len(progress), progress[0], progress[len(progress)-1])
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("messages out of order at %d", i)
		}
	}
	r := replay.Compute(all, opts)
	if r.Final.Count != 305 || len(r.Steps) != 305 {
		t.Fatalf("replayed count %d over %d steps", r.Final.Count, len(r.Steps))
	}

	since, err := replay.Read(ctx, conn.JS, keyer, replay.Options{Tenant: opts.Tenant, User: opts.User, Since: mid})
	if err != nil || len(since) != 5 {
		t.Fatalf("--since: %d messages, %v", len(since), err)
	}
	until, err := replay.Read(ctx, conn.JS, keyer, replay.Options{Tenant: opts.Tenant, User: opts.User, Until: mid})
	if err != nil || len(until) != 300 {
		t.Fatalf("--until: %d messages, %v", len(until), err)
	}
}
