package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/coalesce"
	"github.com/pushproxy/pushproxy/internal/replay"
	"github.com/pushproxy/pushproxy/internal/unread"
)

func replayCommand() command {
	return command{name: "replay", summary: "replay a user's events for debugging, and optionally push the recomputed count", run: runReplay}
}

func runReplay(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("replay", "pushctl replay --user ADDRESS [--tenant DOMAIN] [--since DURATION|TIME] [--until TIME] [--dry-run] [flags]", `
Reads one user's events back from the MAIL stream (kept for the stream's max
age, 7 days by default) and prints each event with the unread count after
it, then the pushes the coalescing core would send for that sequence and the
final count. The count starts from zero at the first event read: it is exact
only from an event that carries an authoritative count (Dovecot's unseen,
EWS UnreadCount, a native "unread").

Without --dry-run it then changes two things:
  1. the user's unread state (KV bucket "unread") gets the recomputed count,
     its exactness and the last event read;
  2. one push of that count goes to every device subscription of the user,
     even if the devices already show it, and is recorded in PUSH_SENT.
Nothing else changes: no event is added or removed, and other users are not
touched. It refuses when the user has events newer than those read (drop
--until) or has no devices.`)
	who := addUserFlags(fs, "the user's address, e.g. alice@fabrikam.com (required)")
	since := fs.String("since", "", "start at events stored since then: a duration back from now (2h, 30m) or a time (2026-03-01T12:00:00Z, 2026-03-01)")
	until := fs.String("until", "", "stop after events stored until then: a time (RFC 3339 or a date)")
	dryRun := fs.Bool("dry-run", false, "only print; change no state and send no push")
	window := fs.Duration("window", coalesce.DefaultWindow, "the coalescing window of new mail to simulate (use the dispatchers' setting)")
	debounce := fs.Duration("debounce", coalesce.DefaultDebounce, "the debounce of decreases to simulate")
	maxDelay := fs.Duration("max-delay", coalesce.DefaultMaxDelay, "the longest wait of a push to simulate")
	mailbox := fs.String("mailbox", "", "the mailbox whose unread messages are counted (default INBOX)")
	certDir := fs.String("cert-dir", "", "folder of the S2S certificates, for the push (default: the one in the auth configuration)")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the relay's answer to the push")
	o := natsFlags(fs)
	tenant, user, err := c.parseUser(fs, args, who, true)
	if err != nil {
		return err
	}
	now := time.Now()
	opts := replay.Options{Tenant: tenant, User: user,
		Coalesce: coalesce.Config{Window: *window, Debounce: *debounce, MaxDelay: *maxDelay},
		Unread:   unread.Options{Mailbox: *mailbox}}
	if opts.Since, err = parseWhen("since", *since, now, true); err != nil {
		return err
	}
	if opts.Until, err = parseWhen("until", *until, now, false); err != nil {
		return err
	}
	if err := opts.Coalesce.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	conn, keyer, err := connectOpen(ctx, o, broker.Keyer)
	if err != nil {
		return err
	}
	defer conn.Close()
	prog := newProgress(c.stderr, "reading events")
	opts.Progress = prog.update
	msgs, err := replay.Read(ctx, conn.JS, keyer, opts)
	if err == nil {
		prog.finish("events read")
	}
	if err != nil {
		if errors.Is(err, replay.ErrNoEvents) {
			return fmt.Errorf("%w: %s", err, user)
		}
		return err
	}
	report := replay.Compute(msgs, opts)
	if err := report.Format(c.stdout); err != nil {
		return err
	}
	if *dryRun {
		return nil
	}

	stores, err := openPushStores(ctx, conn.JS, keyer)
	if err != nil {
		return err
	}
	res, err := replay.Repush(ctx, replay.PushDeps{
		JS: conn.JS, Keyer: keyer, Unread: stores.unread, Subscriptions: stores.subs, Settings: stores.settings,
		Relay: stores.relay(*certDir, *timeout),
	}, report)
	if err != nil && res.Devices == 0 {
		return err
	}
	fmt.Fprintf(c.stdout, "\nUnread state set to %d (was %d). Pushed %d to %d device(s): %d delivered, %d gone, %d to retry, %d rejected.\n",
		res.Count, res.Previous, res.Count, res.Devices, res.Delivered, res.Gone, res.Retry, res.Rejected)
	return err
}

// parseWhen reads a time flag: an RFC 3339 time, a date (UTC midnight) or,
// when durations are allowed, a duration back from now. Empty gives the
// zero time.
func parseWhen(name, v string, now time.Time, durations bool) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	if durations {
		if d, err := time.ParseDuration(v); err == nil {
			if d < 0 {
				return time.Time{}, fmt.Errorf("%w: --%s %s: give a positive duration back from now", errUsage, name, v)
			}
			return now.Add(-d), nil
		}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	want := "a time such as 2026-03-01T12:00:00Z or 2026-03-01"
	if durations {
		want = "a duration such as 2h or " + want
	}
	return time.Time{}, fmt.Errorf("%w: --%s %q: want %s", errUsage, name, v, want)
}
