package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/scan"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/replay"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/unread"
)

func traceCommand() command {
	return command{name: "trace", summary: "one user's recent events, state, devices, pushes and dead letters in one view", run: runTrace}
}

// trace is what pushctl trace shows of one user.
type trace struct {
	Tenant      string               `json:"tenant"`
	User        string               `json:"user"`
	UserKey     string               `json:"user_key"`
	State       *unread.State        `json:"state,omitempty"`
	Devices     []traceDevice        `json:"devices"`
	Events      []traceEvent         `json:"events"`
	Pushes      []pushlog.SentRecord `json:"pushes"`
	DeadLetters []pushlog.DeadLetter `json:"dead_letters"`
}

// traceEvent is one stored event of the user.
type traceEvent struct {
	Seq     uint64    `json:"seq"`
	Stored  time.Time `json:"stored"`
	Kind    string    `json:"kind"`
	Mailbox string    `json:"mailbox"`
	Unread  *int      `json:"unread,omitempty"`
	Source  string    `json:"source"`
}

// traceDevice is a device as the trace shows it: by reference, never the
// token.
type traceDevice struct {
	Ref       string    `json:"ref"`
	Label     string    `json:"label,omitempty"`
	Platform  string    `json:"platform"`
	Updated   time.Time `json:"updated"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

func runTrace(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("trace", "pushctl trace --user ADDRESS [--since DURATION|TIME] [--last N] [flags]", `
Shows one user in one view, to follow a badge from the mail server to the
devices: the unread state the dispatchers keep (count, exact or estimated,
last event applied, last count pushed), the device subscriptions (by
reference, never the token), the user's last events in the MAIL stream,
the pushes recorded in PUSH_SENT with what the relay answered, and the
dead letters in PUSH_DEAD. Nothing is changed.`)
	who := addUserFlags(fs, "the user's address, e.g. alice@fabrikam.com (required)")
	since := fs.String("since", "24h", "look back this far (a duration, or a time such as 2026-03-01T12:00:00Z)")
	last := fs.Int("last", 20, "show at most this many of the latest events, pushes and dead letters each")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	o := natsFlags(fs)
	tenant, user, err := c.parseUser(fs, args, who, true)
	if err != nil {
		return err
	}
	if *last < 1 {
		return fmt.Errorf("%w: --last must be at least 1", errUsage)
	}
	from, err := parseWhen("since", *since, time.Now(), true)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	tr, err := readTrace(ctx, conn, tenant, user, from, *last)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(c.stdout).Encode(tr)
	}
	return tr.format(c.stdout)
}

// readTrace gathers the trace of one user.
func readTrace(ctx context.Context, conn *broker.Conn, tenant, user string, since time.Time, last int) (trace, error) {
	keyer, err := broker.Keyer(ctx, conn.JS)
	if err != nil {
		return trace{}, err
	}
	tr := trace{Tenant: tenant, User: user, UserKey: keyer.UserKey(tenant, user), Devices: []traceDevice{}}
	states, err := unread.Open(ctx, conn.JS)
	if err != nil {
		return trace{}, err
	}
	if st, _, err := states.Get(ctx, tr.UserKey); err == nil {
		tr.State = &st
	}
	subs, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		return trace{}, err
	}
	devices, err := subs.List(ctx, tenant, user)
	if err != nil {
		return trace{}, fmt.Errorf("listing the user's devices: %w", err)
	}
	for _, d := range devices {
		tr.Devices = append(tr.Devices, traceDevice{Ref: subscriptions.DeviceRef(d.AppID, d.DeviceID), Label: d.Label, Platform: string(d.Platform),
			Updated: d.LastSubscriptionUpdate, ExpiresAt: d.ExpiresAt})
	}
	evs, err := replay.Read(ctx, conn.JS, keyer, replay.Options{Tenant: tenant, User: user, Since: since})
	if err != nil {
		return trace{}, err
	}
	tr.Events = []traceEvent{}
	for _, m := range lastOf(evs, last) {
		e, err := events.Decode(m.Data)
		if err != nil {
			continue // an event the dispatchers terminate as invalid
		}
		tr.Events = append(tr.Events, traceEvent{Seq: m.Seq, Stored: m.Stored, Kind: string(e.Kind), Mailbox: e.Mailbox, Unread: e.Unread, Source: string(e.Source)})
	}
	if tr.Pushes, err = lastRecords[pushlog.SentRecord](ctx, conn, broker.StreamSent, pushlog.SentSubject(tr.UserKey), since, last); err != nil {
		return trace{}, err
	}
	if tr.DeadLetters, err = lastRecords[pushlog.DeadLetter](ctx, conn, broker.StreamDead, pushlog.DeadSubject(tr.UserKey), since, last); err != nil {
		return trace{}, err
	}
	return tr, nil
}

// lastRecords reads the records of one subject of stream since a time and
// keeps the last n.
func lastRecords[T any](ctx context.Context, conn *broker.Conn, stream, subject string, since time.Time, n int) ([]T, error) {
	out := []T{}
	err := scan.Stream(ctx, conn.JS, stream, scan.Options{Filters: []string{subject}, Since: since}, func(m scan.Message) error {
		var rec T
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			return nil // a record this version cannot read is left out
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", stream, err)
	}
	return lastOf(out, n), nil
}

// lastOf keeps the last n of list.
func lastOf[T any](list []T, n int) []T {
	if len(list) > n {
		return list[len(list)-n:]
	}
	return list
}

// format prints the trace as sections of tables.
func (tr trace) format(w io.Writer) error {
	fmt.Fprintf(w, "User    %s (tenant %s, key %s)\n", tr.User, tr.Tenant, tr.UserKey)
	if tr.State == nil {
		fmt.Fprintln(w, "State   none yet: no event of this user was applied")
	} else {
		exact := "estimated"
		if tr.State.Exact {
			exact = "exact"
		}
		pushed := "nothing pushed yet"
		if tr.State.LastPushedCount != nil {
			pushed = fmt.Sprintf("%d pushed at %s (events up to #%d)", *tr.State.LastPushedCount, formatTime(tr.State.LastPushedAt), tr.State.LastPushedSeq)
		}
		fmt.Fprintf(w, "State   count %d (%s), last event #%d; %s\n", tr.State.Count, exact, tr.State.LastSeq, pushed)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nDEVICE\tLABEL\tPLATFORM\tUPDATED\tEXPIRES\n")
	for _, d := range tr.Devices {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Ref, orDash(d.Label), d.Platform, formatTime(d.Updated), formatTime(d.ExpiresAt))
	}
	fmt.Fprintf(tw, "\nEVENT\tSTORED\tKIND\tMAILBOX\tUNREAD\tSOURCE\n")
	for _, m := range tr.Events {
		fmt.Fprintf(tw, "#%d\t%s\t%s\t%s\t%s\t%s\n", m.Seq, formatTime(m.Stored), m.Kind, m.Mailbox, orDash(intText(m.Unread)), m.Source)
	}
	fmt.Fprintf(tw, "\nPUSHED\tCOUNT\tEVENTS\tDEVICES\tGONE\tREJECTED\n")
	for _, p := range tr.Pushes {
		fmt.Fprintf(tw, "%s\t%d\t#%d..#%d\t%d\t%d\t%d\n", formatTime(p.SentAt), p.Count, p.FirstSeq, p.LastSeq, p.Devices, p.Gone, p.Rejected)
	}
	fmt.Fprintf(tw, "\nDEAD LETTER\tREASON\tATTEMPTS\tLAST ERROR\n")
	for _, d := range tr.DeadLetters {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", formatTime(d.DeadAt), d.Reason, d.Attempts, orDash(d.LastError))
	}
	return tw.Flush()
}

func intText(p *int) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(*p)
}
