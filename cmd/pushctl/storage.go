package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/dispatcher"
	"github.com/pushproxy/pushproxy/internal/storage"
)

func storageCommand() command {
	return group("storage", "show or switch how the unread states and subscriptions are encoded",
		command{name: "encoding", summary: "show the encoding writers use, or switch it: json or compact", run: runStorageEncoding},
	)
}

func runStorageEncoding(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("storage encoding", "pushctl storage encoding [json|compact] [flags]", fmt.Sprintf(`
Without an argument, prints the encoding in which every process writes
the values of the unread (user states) and subscriptions buckets. With one,
switches it for the whole deployment: writers follow within about %d
seconds, without a restart. Readers read both encodings, always; only the
values written from then on change.

compact takes about half the bytes per entry of json. Releases before it
read only json: a dispatcher of such a release cannot read a compact state
and pushes wrong badges. Switch to compact only when every process that
reads these buckets (ingest, dispatchers, monitor, reconciler, pushctl)
runs this release or a later one. Switching back to json is safe at any
time. Going back to an earlier release after compact is not: switch to
json first, and know that a value is rewritten only when it changes (a
subscription at its next refresh or expiry, a user's state at the user's
next event).

Before switching to compact it listens to the dispatchers' heartbeats for
--listen and refuses while one that reads only json (an earlier release)
announces itself; --force switches anyway. Other processes do not
announce what they read: upgrade them first.

An upgraded deployment writes json until switched; a new installation
(provisioned from nothing) starts with compact.`, int(storage.Refresh.Seconds())))
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	listen := fs.Duration("listen", 2500*time.Millisecond, "how long to listen for dispatcher heartbeats before switching to compact (they come every second by default)")
	subject := fs.String("membership-subject", dispatcher.DefaultMembershipSubject, "the subject dispatchers announce themselves on")
	force := fs.Bool("force", false, "switch to compact even while a dispatcher that reads only json runs")
	o := natsFlags(fs)
	pos, err := c.parseWithArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("%w: give at most one encoding, json or compact", errUsage)
	}
	var want storage.Encoding
	if len(pos) == 1 {
		if want, err = storage.ParseEncoding(pos[0]); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	conn, kv, err := connectOpen(ctx, o, func(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
		kv, err := js.KeyValue(ctx, broker.BucketConfig)
		if err != nil {
			return nil, fmt.Errorf("opening bucket %s: %w", broker.BucketConfig, err)
		}
		return kv, nil
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	if want == "" {
		st, stored, err := storage.Read(ctx, kv)
		if err != nil {
			return err
		}
		return printStorage(c.stdout, st, stored, *asJSON)
	}
	if want == storage.Compact && !*force {
		cur, _, err := storage.Read(ctx, kv)
		if err != nil {
			return err
		}
		if cur.Encoding != want {
			if err := checkDispatchersRead(ctx, c.stderr, conn.NC, *subject, *listen, want); err != nil {
				return err
			}
		}
	}
	st, changed, err := storage.SetEncoding(ctx, kv, want, storage.ByOperator, time.Now())
	if err != nil {
		return err
	}
	if !changed && !*asJSON {
		fmt.Fprintf(c.stderr, "The encoding was %s already; nothing changed.\n", st.Encoding)
	}
	return printStorage(c.stdout, st, true, *asJSON)
}

// checkDispatchersRead listens to the dispatchers' heartbeats for d and
// fails when one of them does not read enc.
func checkDispatchersRead(ctx context.Context, w io.Writer, nc *nats.Conn, subject string, d time.Duration, enc storage.Encoding) error {
	workers, err := listenWorkers(ctx, nc, subject, d)
	if err != nil {
		return err
	}
	var old []string
	for _, wk := range workers {
		if !slices.Contains(wk.Reads, enc) {
			old = append(old, wk.ID)
		}
	}
	if len(old) > 0 {
		return fmt.Errorf("%d of %d dispatchers read only json (a release before the compact encoding): %s; upgrade them first, or pass --force",
			len(old), len(workers), strings.Join(old, ", "))
	}
	if len(workers) == 0 {
		fmt.Fprintf(w, "No dispatcher announced itself within %s.\n", d)
	} else {
		fmt.Fprintf(w, "All %d dispatchers heard read %s.\n", len(workers), enc)
	}
	return nil
}

// printStorage prints the storage settings as name : value lines, or as
// JSON; stored says whether they were set or are the default.
func printStorage(w io.Writer, st storage.Settings, stored, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	by := st.By
	if !stored {
		by = "nobody: the default of a deployment upgraded from a release that wrote only json"
	}
	return printFields(w, [][2]string{
		{"Encoding", string(st.Encoding)},
		{"WhenChanged", formatTime(st.ChangedAt)},
		{"ChangedBy", by},
	})
}
