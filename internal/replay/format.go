package replay

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
)

// timeFormat prints stored times to the millisecond, in UTC.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// Format prints the report: the events with the count after each, the
// pushes the coalescing core would send, and the final count.
func (r Report) Format(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Replay of %s (tenant %s): %d event(s)", r.User, r.Tenant, len(r.Steps))
	if len(r.Steps) > 0 {
		fmt.Fprintf(&b, ", stored %s to %s", stamp(r.Steps[0].Stored), stamp(r.Steps[len(r.Steps)-1].Stored))
	}
	b.WriteString("\n\n")

	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTORED\tSOURCE\tKIND\tMAILBOX\tCHANGE\tUNREAD\t")
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "%d\t%s\t", s.Seq, stamp(s.Stored))
		switch {
		case s.Invalid != "":
			fmt.Fprintf(tw, "-\t-\t-\t-\t%s\tinvalid, skipped: %s\n", count(s.After, s.Exact), oneLine(s.Invalid))
			continue
		case s.Foreign:
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t%s\tanother user's event, skipped\n", s.Event.Source, s.Event.Kind, mailboxOf(s.Event), count(s.After, s.Exact))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Event.Source, s.Event.Kind, mailboxOf(s.Event), change(s), count(s.After, s.Exact), note(s))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	c := r.Coalesce
	fmt.Fprintf(&b, "\nPushes the coalescing core would send (window %s, debounce %s, max delay %s):\n", c.Window, c.Debounce, c.MaxDelay)
	if len(r.Pushes) == 0 {
		b.WriteString("none\n")
	} else {
		tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DUE\tCOUNT\tCHANGES\tLAST SEQ\t")
		for _, p := range r.Pushes {
			what := "push"
			if p.Skip {
				what = fmt.Sprintf("skip: the devices already show %d", p.Count)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", stamp(p.Deadline), p.Count, p.Changes, p.Seq, what)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	exactness := "estimated: no event read carried an authoritative count"
	switch {
	case r.Final.Exact:
		exactness = "exact"
	case slices.ContainsFunc(r.Steps, func(s Step) bool { return s.Authoritative }):
		exactness = "estimated: changes since the last authoritative count"
	}
	fmt.Fprintf(&b, "\nFinal unread count: %d (%s)\n", r.Final.Count, exactness)
	_, err := io.WriteString(w, trimLines(b.String()))
	return err
}

func stamp(t time.Time) string { return t.UTC().Format(timeFormat) }

// mailboxOf is the event's mailbox, with the origin of a move.
func mailboxOf(e events.Event) string {
	if e.Kind == events.KindMoved {
		return e.FromMailbox + " -> " + e.Mailbox
	}
	return e.Mailbox
}

// change is how the event moved the count: "=N" for an authoritative count,
// "+N" or "-N" for a change, "0" for none.
func change(s Step) string {
	if s.Authoritative {
		return "=" + strconv.Itoa(s.After)
	}
	switch d := s.After - s.Before; {
	case d > 0:
		return "+" + strconv.Itoa(d)
	case d < 0:
		return strconv.Itoa(d)
	}
	return "0"
}

// count prints a count and whether it is an estimate.
func count(n int, exact bool) string {
	if exact {
		return strconv.Itoa(n)
	}
	return strconv.Itoa(n) + " (estimated)"
}

// note explains an event that left the count as it was.
func note(s Step) string {
	if s.Before == s.After && !s.Authoritative {
		return "no change to the count"
	}
	return ""
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// trimLines drops the spaces tabwriter leaves at the end of lines.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}
