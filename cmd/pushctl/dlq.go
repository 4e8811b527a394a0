package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/deadletter"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/flagenv"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

func dlqCommand() command {
	return group("dlq", "list, show, redrive or purge dead letters (notifications that could not be delivered)",
		command{name: "list", summary: "list dead letters, filtered by tenant, user, reason and time", run: runDLQList},
		command{name: "show", summary: "show dead letters in full", run: runDLQShow},
		command{name: "redrive", summary: "send dead letters to the relay again and remove those delivered", run: runDLQRedrive},
		command{name: "purge", summary: "delete dead letters", run: runDLQPurge},
	)
}

// dlqFilter holds the selection flags shared by the dlq commands.
type dlqFilter struct {
	who    userFlag
	reason *string
	since  *string
	until  *string
}

func addDLQFilter(fs *flag.FlagSet) dlqFilter {
	return dlqFilter{
		who:    addUserFlags(fs, "only dead letters of this user (an address)"),
		reason: fs.String("reason", "", "only dead letters with this reason: permanent, exhausted, rejected, device_retries, missing_response"),
		since:  fs.String("since", "", "only dead letters given up since then: a duration back from now (2h) or a time (RFC 3339 or a date)"),
		until:  fs.String("until", "", "only dead letters given up until then: a time (RFC 3339 or a date)"),
	}
}

// dlqSelection is the selection of the dlq commands that change letters:
// the filters, SEQ arguments and --all.
type dlqSelection struct {
	dlqFilter
	all *bool
}

// addDLQSelection registers the filter flags and --all; allUsage says what
// --all does.
func addDLQSelection(fs *flag.FlagSet, allUsage string) dlqSelection {
	return dlqSelection{dlqFilter: addDLQFilter(fs), all: fs.Bool("all", false, allUsage)}
}

// parse parses the command line and returns the letters it selects,
// refusing one that narrows nothing without --all.
func (s dlqSelection) parse(c *cli, fs *flag.FlagSet, args []string) (deadletter.Filter, error) {
	pos, err := c.parseWithArgs(fs, args)
	if err != nil {
		return deadletter.Filter{}, err
	}
	f, err := s.filter(pos)
	if err != nil {
		return f, err
	}
	if !narrowed(f) && !*s.all {
		return f, fmt.Errorf("%w: give sequence numbers, filters, or --all", errUsage)
	}
	return f, nil
}

// filter builds the selection from the flags and the SEQ arguments.
func (d dlqFilter) filter(args []string) (deadletter.Filter, error) {
	tenant, user, err := d.who.resolve(false)
	if err != nil {
		return deadletter.Filter{}, err
	}
	f := deadletter.Filter{Tenant: tenant, User: user, Reason: strings.TrimSpace(*d.reason)}
	now := time.Now()
	if f.Since, err = parseWhen("since", *d.since, now, true); err != nil {
		return f, err
	}
	if f.Until, err = parseWhen("until", *d.until, now, false); err != nil {
		return f, err
	}
	f.Seqs, err = parseSeqs(args)
	return f, err
}

// parseSeqs reads dead letters' sequence numbers.
func parseSeqs(args []string) ([]uint64, error) {
	var out []uint64
	for _, a := range args {
		seq, err := strconv.ParseUint(a, 10, 64)
		if err != nil || seq == 0 {
			return nil, fmt.Errorf("%w: %q is not a dead letter's sequence number (see pushctl dlq list)", errUsage, a)
		}
		out = append(out, seq)
	}
	return out, nil
}

// narrowed reports whether f selects less than every letter.
func narrowed(f deadletter.Filter) bool {
	return f.Tenant != "" || f.Reason != "" || !f.Since.IsZero() || !f.Until.IsZero() || len(f.Seqs) > 0
}

// parseWithArgs parses flags and positional arguments in any order, then
// the environment, and returns the positional arguments.
func (c *cli) parseWithArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	noEnv := func(string) string { return "" }
	for {
		if err := flagenv.Parse(fs, args, noEnv); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if err := flagenv.Parse(fs, nil, c.getenv); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return pos, nil
}

// withDLQ connects and lists the letters f selects.
func withDLQ(ctx context.Context, o *broker.Options, f deadletter.Filter, run func(*broker.Conn, *events.Keyer, []deadletter.Letter) error) error {
	conn, keyer, err := connectOpen(ctx, o, broker.Keyer)
	if err != nil {
		return err
	}
	defer conn.Close()
	letters, err := deadletter.List(ctx, conn.JS, keyer, f)
	if err != nil {
		return err
	}
	return run(conn, keyer, letters)
}

func runDLQList(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("dlq list", "pushctl dlq list [--tenant DOMAIN] [--user ADDRESS] [--reason R] [--since DURATION|TIME] [--until TIME] [flags]", `
Lists the notifications the dispatcher gave up on (stream PUSH_DEAD), oldest
first, with the sequence number that dlq show, redrive and purge take.`)
	sel := addDLQFilter(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	f, err := sel.filter(nil)
	if err != nil {
		return err
	}
	return withDLQ(ctx, o, f, func(_ *broker.Conn, _ *events.Keyer, letters []deadletter.Letter) error {
		if *asJSON {
			return printJSON(c.stdout, letters)
		}
		if len(letters) == 0 {
			fmt.Fprintln(c.stderr, "No dead letters.")
			return nil
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tDEAD AT\tTENANT\tUSER\tREASON\tATTEMPTS\tCOUNT\tDEVICES\tLAST ERROR")
		for _, l := range letters {
			if l.Invalid != "" {
				fmt.Fprintf(tw, "%d\t%s\t-\t-\tinvalid\t-\t-\t-\t%s\n", l.Seq, formatTime(l.At()), shorten(l.Invalid, 80))
				continue
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", l.Seq, formatTime(l.At()), l.Tenant, l.User, l.Reason,
				l.Attempts, l.Notification.Payload.UnseenEmailCount, len(l.Notification.Recipients), shorten(l.LastError, 80))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "%d dead letter(s).\n", len(letters))
		return nil
	})
}

func runDLQShow(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("dlq show", "pushctl dlq show SEQ... [flags]", `
Shows dead letters in full: why and when the notification was given up, the
last error, the mail events it covered, and its devices (by reference, never
by push token).`)
	asJSON := fs.Bool("json", false, "print JSON (device tokens included)")
	o := natsFlags(fs)
	pos, err := c.parseWithArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: give the sequence number of a dead letter (see pushctl dlq list)", errUsage)
	}
	seqs, err := parseSeqs(pos)
	if err != nil {
		return err
	}
	return withDLQ(ctx, o, deadletter.Filter{Seqs: seqs}, func(_ *broker.Conn, _ *events.Keyer, letters []deadletter.Letter) error {
		if *asJSON {
			return printJSON(c.stdout, letters)
		}
		for i, l := range letters {
			if i > 0 {
				fmt.Fprintln(c.stdout)
			}
			if err := printLetter(c.stdout, l); err != nil {
				return err
			}
		}
		return nil
	})
}

// printLetter prints one letter as aligned fields.
func printLetter(w io.Writer, l deadletter.Letter) error {
	if l.Invalid != "" {
		return printFields(w, [][2]string{{"Seq", strconv.FormatUint(l.Seq, 10)}, {"Subject", l.Subject}, {"Stored", formatTime(l.Stored)}, {"Invalid", l.Invalid}})
	}
	seqs := make([]string, 0, len(l.Sequences))
	for _, s := range l.Sequences {
		seqs = append(seqs, strconv.FormatUint(s, 10))
	}
	devices := make([]string, 0, len(l.Notification.Recipients))
	for _, r := range l.Notification.Recipients {
		devices = append(devices, subscriptions.DeviceRef(r.AppID, r.DeviceID))
	}
	var reasons []string
	for _, k := range slices.Sorted(maps.Keys(l.DeviceReasons)) {
		reasons = append(reasons, k+": "+l.DeviceReasons[k])
	}
	return printFields(w, [][2]string{
		{"Seq", strconv.FormatUint(l.Seq, 10)},
		{"Tenant", l.Tenant},
		{"User", l.User},
		{"Reason", l.Reason},
		{"Attempts", strconv.Itoa(l.Attempts)},
		{"LastError", l.LastError},
		{"DeadAt", formatTime(l.At())},
		{"FirstEventAt", formatTime(l.FirstEventAt)},
		{"EventSequences", strings.Join(seqs, ", ")},
		{"NotificationId", l.Notification.ID},
		{"UnseenEmailCount", strconv.Itoa(l.Notification.Payload.UnseenEmailCount)},
		{"Devices", strings.Join(devices, ", ")},
		{"DeviceReasons", strings.Join(reasons, "; ")},
	})
}

func runDLQRedrive(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("dlq redrive", "pushctl dlq redrive (SEQ... | --all | filters) [flags]", `
Sends dead letters to the relay again, one request each, and deletes from
PUSH_DEAD each one the relay took for all its devices. A subscription that a
device-gone verdict removed is first restored from its tombstone (kept 7
days), since redriving says the verdict was wrong; a device the relay reports
gone again loses its subscription (with a new tombstone), as the dispatcher
does. An app fault (bad provider credentials, app not bound) keeps the letter
and every subscription. The count sent
is the user's current unread count when the user's state has moved past the
letter, so a redrive never sets a badge back. Letters the relay refuses again
are kept; the exit code is then 1. On a terminal, a line on standard error
shows how many are done, the rate and the time left; a summary ends the
run.`)
	sel := addDLQSelection(fs, "redrive every dead letter")
	certDir := fs.String("cert-dir", "", "folder of the S2S certificates (default: the one in the auth configuration)")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the relay's answer to each letter")
	o := natsFlags(fs)
	f, err := sel.parse(c, fs, args)
	if err != nil {
		return err
	}
	return withDLQ(ctx, o, f, func(conn *broker.Conn, keyer *events.Keyer, letters []deadletter.Letter) error {
		if len(letters) == 0 {
			fmt.Fprintln(c.stderr, "No dead letters match.")
			return nil
		}
		stores, err := openPushStores(ctx, conn.JS, keyer)
		if err != nil {
			return err
		}
		prog := newProgress(c.stderr, "redriving")
		r := &deadletter.Redriver{JS: conn.JS, Settings: stores.settings, Unread: stores.unread, Subscriptions: stores.subs,
			Relay: stores.relay(*certDir, *timeout), Progress: prog.update}
		outcomes, err := r.Redrive(ctx, letters)
		if err != nil {
			return err
		}
		prog.finish("dead letter(s) sent again")
		kept := 0
		for _, o := range outcomes {
			who := o.Letter.User
			if who == "" {
				who = o.Letter.Subject
			}
			if o.Err != nil {
				kept++
				fmt.Fprintf(c.stdout, "%d\t%s\tkept: %s\n", o.Letter.Seq, who, oneLine(o.Err))
				continue
			}
			count := strconv.Itoa(o.Count)
			if o.Refreshed {
				count += fmt.Sprintf(" (the user's current count; the letter had %d)", o.Letter.Notification.Payload.UnseenEmailCount)
			}
			restored := ""
			if o.Restored > 0 {
				restored = fmt.Sprintf(", %d subscription(s) restored from tombstones", o.Restored)
			}
			fmt.Fprintf(c.stdout, "%d\t%s\tredriven: count %s, %d delivered, %d gone%s; removed from PUSH_DEAD\n", o.Letter.Seq, who, count, o.Delivered, o.Gone, restored)
		}
		if kept > 0 {
			return fmt.Errorf("%d of %d dead letter(s) could not be redriven and were kept", kept, len(outcomes))
		}
		return nil
	})
}

func runDLQPurge(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("dlq purge", "pushctl dlq purge (SEQ... | --all | filters) --yes [flags]", `
Deletes dead letters from PUSH_DEAD for good: their notifications are not
sent. Without --yes it only says how many would be deleted.`)
	sel := addDLQSelection(fs, "select every dead letter")
	yes := fs.Bool("yes", false, "really delete them")
	o := natsFlags(fs)
	f, err := sel.parse(c, fs, args)
	if err != nil {
		return err
	}
	return withDLQ(ctx, o, f, func(conn *broker.Conn, _ *events.Keyer, letters []deadletter.Letter) error {
		if !*yes {
			return fmt.Errorf("%w: %d dead letter(s) match; add --yes to delete them", errUsage, len(letters))
		}
		for _, l := range letters {
			if err := deadletter.Delete(ctx, conn.JS, l.Seq); err != nil {
				return err
			}
		}
		fmt.Fprintf(c.stdout, "Deleted %d dead letter(s).\n", len(letters))
		return nil
	})
}

// shorten cuts s to n characters on one line.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
