package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// kill records one process killed by a scenario.
type kill struct {
	target string
	at     time.Time // when the signal was sent
	dead   time.Time // when the process was reaped
	owns   []int     // the partitions it announced last (dispatchers)
}

// outage records a span during which pushes could not reach devices (relay
// down, provider credential fault).
type outage struct {
	what     string
	down, up time.Time
}

// facts is what a scenario's fault script did, for the report.
type facts struct {
	kills   []kill
	outages []outage
	notes   []string
}

// result is the outcome of one scenario: what was asserted and what was
// measured.
type result struct {
	name     string
	duration time.Duration
	users    int
	events   int
	retries  int
	answers  map[string]int
	settled  bool // every device's last badge reached the oracle in time
	settle   time.Duration

	unacked    []string // events never acknowledged (load could not finish)
	rejected   []string // events ingest refused with 4xx
	wrong      []string // final badge != oracle
	outOfOrder []string // a lower badge after a higher one
	lost       []string // acknowledged events missing from MAIL
	dupStored  []string // one change stored twice
	subsLost   []string // subscriptions gone at the end
	dead       int
	deadWhy    map[string]int
	takeovers  []takeover
	recoveries []recovery
	provider   []string // protocol errors the test provider saw
	crashes    []string // processes that exited on their own (restarted)
	notes      []string

	// neighbour is the other organization's result, with
	// systemOptions.neighbour.
	neighbour *result
	// late are the events pushed later than lateBound during faults
	// they must not feel (a neighbour's, during the other organization's
	// faults; scenario.onTime); isolation sums up how late the pushes
	// were, during the faults and outside them.
	late      []string
	lateBound time.Duration
	isolation string
}

// takeover is how long the partitions of a killed process took to be
// applied again.
type takeover struct {
	target   string
	at       time.Time // when it was killed
	owns     []int
	worst    time.Duration // max over its partitions
	resolved bool          // every partition was seen applying again
	detail   string
}

// recovery measures the pushes after an outage ended.
type recovery struct {
	what      string
	down, up  time.Time
	firstPush time.Duration // from the end of the outage to the first push
	pending   int           // users whose count changed during the outage
	maxPushes int           // most pushes of one user with counts known at recovery
	multi     int           // users with more than one such push
	stale     int           // pushes carrying an older count than known at recovery
	// current is from the end of the outage until the last of the
	// pending users had a badge at least as high as its count then;
	// behind counts the pending users that never had one.
	current    time.Duration
	behind     int
	noFirst    bool
	usersCount int
	examples   []string // users with more than one such push
	slowest    string   // the user current last, with its badges
}

// failed reports whether an assertion failed.
func (r *result) failed() bool {
	return len(r.unacked)+len(r.rejected)+len(r.wrong)+len(r.outOfOrder)+len(r.lost)+len(r.dupStored)+len(r.subsLost)+r.dead+len(r.late) > 0 ||
		(r.neighbour != nil && r.neighbour.failed())
}

// errs returns the failed assertions with evidence, at most max items each.
func (r *result) errs(max int) []string {
	var out []string
	add := func(what string, items []string) {
		if len(items) == 0 {
			return
		}
		shown := items
		if len(shown) > max {
			shown = shown[:max]
		}
		more := ""
		if len(items) > max {
			more = fmt.Sprintf("\n    ... and %d more", len(items)-max)
		}
		out = append(out, fmt.Sprintf("%s: %d\n    %s%s", what, len(items), strings.Join(shown, "\n    "), more))
	}
	add("events never acknowledged by ingest", r.unacked)
	add("events rejected by ingest (4xx)", r.rejected)
	add("wrong final badges (device's last badge != true count)", r.wrong)
	add("out-of-order badges (a lower count after a higher one)", r.outOfOrder)
	add("acknowledged events missing from MAIL (lost)", r.lost)
	add("changes stored twice in MAIL (dedup failed)", r.dupStored)
	add("subscriptions lost", r.subsLost)
	add("reasons of dead letters (no fault here is a verdict on a device or an app: each letter is a badge dropped)", r.deadReasons())
	add(fmt.Sprintf("events pushed more than %s after their acknowledgement during faults they must not feel (another organization's, one relay replica's)", r.lateBound), r.late)
	if r.neighbour != nil {
		for _, e := range r.neighbour.errs(max) {
			out = append(out, r.neighbour.name+": "+e)
		}
	}
	return out
}

// deadReasons lists the dead letters' reasons, with how many had each.
func (r *result) deadReasons() []string {
	keys := make([]string, 0, len(r.deadWhy))
	for k := range r.deadWhy {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%5d  %s", r.deadWhy[k], k)
	}
	return out
}

// streamEvent is what the checks read of a MAIL message.
type streamEvent struct {
	User     string `json:"user"`
	ChangeID string `json:"change_id"`
}

// readMail reads the whole MAIL stream: the stored change ids per user and
// each user's partition (from the stored subject mail.<p>.<tenant>.<user>).
func readMail(ctx context.Context, js jetstream.JetStream) (map[string]map[string]int, map[string]int, error) {
	changes := map[string]map[string]int{}
	parts := map[string]int{}
	err := readStream(ctx, js, streamMail, func(m jetstream.Msg) {
		var e streamEvent
		if json.Unmarshal(m.Data(), &e) != nil {
			return
		}
		if changes[e.User] == nil {
			changes[e.User] = map[string]int{}
		}
		changes[e.User][e.ChangeID]++
		if tok := strings.Split(m.Subject(), "."); len(tok) > 2 {
			if p, err := strconv.Atoi(tok[1]); err == nil {
				parts[e.User] = p
			}
		}
	})
	return changes, parts, err
}

// readDead counts the dead letters by reason.
func readDead(ctx context.Context, js jetstream.JetStream) (int, map[string]int, error) {
	why := map[string]int{}
	n := 0
	err := readStream(ctx, js, streamDead, func(m jetstream.Msg) {
		n++
		var d struct {
			Reason    string `json:"reason"`
			LastError string `json:"last_error"`
		}
		_ = json.Unmarshal(m.Data(), &d)
		key := d.Reason
		if d.LastError != "" {
			key += ": " + d.LastError
		}
		if len(key) > 120 {
			key = key[:120] + "…"
		}
		why[key]++
	})
	return n, why, err
}

// readStream calls f for every message of stream, in order, with an
// ordered consumer.
func readStream(ctx context.Context, js jetstream.JetStream, stream string, f func(jetstream.Msg)) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		msgs, err := readStreamOnce(ctx, js, stream)
		if err == nil {
			for _, m := range msgs {
				f(m)
			}
			return nil
		}
		// A loaded cluster may be between leaders for a moment (no
		// responders, a request timing out): read again, as an operator's
		// tool would, until the budget ends.
		if ctx.Err() != nil || !(errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// readStreamOnce reads every message of stream, or fails.
func readStreamOnce(ctx context.Context, js jetstream.JetStream, stream string) ([]jetstream.Msg, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(rctx, stream)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", stream, err)
	}
	info, err := st.Info(rctx)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", stream, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(rctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", stream, err)
	}
	var out []jetstream.Msg
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", stream, err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", stream, err)
			}
			if md.Sequence.Stream >= last {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("reading %s: %w", stream, err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading %s up to %d: %w", stream, last, ctx.Err())
		}
	}
}

// settleOptions bound the wait for the system to quiesce.
type settleOptions struct {
	timeout time.Duration // for every device's last badge to reach the oracle
	quiet   time.Duration // then no push for this long
}

// settle waits until every device's last badge equals its user's true
// count, then until no push arrived for quiet, each with a deadline.
func settle(ctx context.Context, p *provider, o *oracle, opts settleOptions) (bool, time.Duration) {
	start := time.Now()
	want := o.final()
	err := waitUntil(ctx, "every badge to reach the oracle", opts.timeout, 250*time.Millisecond, func(context.Context) (bool, error) {
		for i, u := range o.users {
			b, ok := p.lastBadge(u.device)
			if want[i] == 0 && !ok {
				continue
			}
			if !ok || b.Count != want[i] {
				return false, fmt.Errorf("%s: want %d, have %d", u.name, want[i], b.Count)
			}
		}
		return true, nil
	})
	took := time.Since(start)
	_ = waitUntil(ctx, "no more pushes", opts.quiet+30*time.Second, 200*time.Millisecond, func(context.Context) (bool, error) {
		last, _, _ := p.stats()
		return time.Since(last) >= opts.quiet, nil
	})
	return err == nil, took
}

// check compares what the devices received with the oracle and the
// stream, and measures takeovers and recoveries.
func check(ctx context.Context, s *system, o *oracle, f facts, ic *ingestClient) (*result, error) {
	r := &result{users: len(o.users), answers: map[string]int{}}
	badges := s.provider.snapshot()
	final := o.final()
	changes, parts, err := readMail(ctx, s.js)
	if err != nil {
		return nil, err
	}
	if r.dead, r.deadWhy, err = readDead(ctx, s.js); err != nil {
		return nil, err
	}
	o.mu.Lock()
	r.retries = o.retries
	for k, v := range o.answers {
		r.answers[k] = v
	}
	r.unacked = append(r.unacked, o.unacked...)
	for i, u := range o.users {
		r.events += len(u.acked)
		for _, rej := range u.rejected {
			r.rejected = append(r.rejected, u.name+": "+rej)
		}
		for _, a := range u.acked {
			switch n := changes[u.name][a.changeID]; {
			case n == 0:
				r.lost = append(r.lost, fmt.Sprintf("%s %s (seq %d, acknowledged %s after %d attempts)", u.name, a.changeID, a.seq, a.at.Format(timeFmt), a.attempts))
			case n > 1:
				r.dupStored = append(r.dupStored, fmt.Sprintf("%s %s stored %d times", u.name, a.changeID, n))
			}
		}
		got := badges[u.device]
		last := 0
		if len(got) > 0 {
			last = got[len(got)-1].Count
		}
		if last != final[i] {
			r.wrong = append(r.wrong, fmt.Sprintf("%s (partition %s): expected %d, got %d; %d pushes, last badges %s; acked events %d, last acked %s",
				u.name, partName(parts, u.name), final[i], last, len(got), showBadges(got, 12), len(u.acked), lastAcks(u.acked, 3)))
		}
		for k := 1; k < len(got); k++ {
			if got[k].Count < got[k-1].Count {
				r.outOfOrder = append(r.outOfOrder, fmt.Sprintf("%s (partition %s): badge %d at %s after %d at %s; sequence %s",
					u.name, partName(parts, u.name), got[k].Count, got[k].At.Format(timeFmt), got[k-1].Count, got[k-1].At.Format(timeFmt), showBadges(got[max(0, k-6):min(len(got), k+4)], 10)))
			}
		}
	}
	o.mu.Unlock()
	for _, u := range o.users {
		ok, err := ic.subscribed(ctx, u)
		if err != nil {
			return nil, err
		}
		if !ok {
			r.subsLost = append(r.subsLost, u.name+" (device "+u.device[:8]+"…)")
		}
	}
	byPart := map[int][]int{}
	for i, u := range o.users {
		if p, ok := parts[u.name]; ok {
			byPart[p] = append(byPart[p], i)
		}
	}
	for _, k := range f.kills {
		r.takeovers = append(r.takeovers, measureTakeover(k, byPart, o, badges))
	}
	for _, out := range f.outages {
		r.recoveries = append(r.recoveries, measureRecovery(out, o, badges))
	}
	_, _, r.provider = s.provider.stats()
	r.crashes = s.crashes()
	r.notes = append(r.notes, f.notes...)
	return r, nil
}

const timeFmt = "15:04:05.000"

func partName(parts map[string]int, user string) string {
	if p, ok := parts[user]; ok {
		return strconv.Itoa(p)
	}
	return "?"
}

// showBadges prints the last n badges with their arrival times.
func showBadges(b []badge, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%d@%s", x.Count, x.At.Format(timeFmt))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func lastAcks(a []ack, n int) string {
	if len(a) > n {
		a = a[len(a)-n:]
	}
	parts := make([]string, len(a))
	for i, x := range a {
		parts[i] = fmt.Sprintf("#%d seq %d @%s", x.count, x.seq, x.at.Format(timeFmt))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// measureTakeover finds, for each partition the killed process owned (all
// partitions when unknown), the first push that carries a count only an
// event sent after the process was reaped can have produced: that push
// comes from whoever applies the partition now. The takeover time of
// the kill is the slowest partition's, measured from the signal.
func measureTakeover(k kill, byPart map[int][]int, o *oracle, badges map[string][]badge) takeover {
	owns := k.owns
	if len(owns) == 0 {
		for p := range byPart {
			owns = append(owns, p)
		}
		slices.Sort(owns)
	}
	t := takeover{target: k.target, at: k.at, owns: owns, resolved: true}
	var detail []string
	for _, p := range owns {
		best := time.Duration(-1)
		for _, i := range byPart[p] {
			c := o.firstSentAfter(i, k.dead)
			if c == 0 {
				continue
			}
			for _, b := range badges[o.users[i].device] {
				if b.At.After(k.dead) && b.Count >= c {
					if d := b.At.Sub(k.at); best < 0 || d < best {
						best = d
					}
					break
				}
			}
		}
		if best < 0 {
			t.resolved = false
			detail = append(detail, fmt.Sprintf("p%d: never", p))
			continue
		}
		detail = append(detail, fmt.Sprintf("p%d: %s", p, best.Round(10*time.Millisecond)))
		t.worst = max(t.worst, best)
	}
	t.detail = strings.Join(detail, ", ")
	return t
}

// measureRecovery measures the pushes after an outage: the time to the
// first push, and per user how many pushes carried counts already known
// when the outage ended (ideally one, with the latest), and how many of
// them were stale (older than known at recovery).
func measureRecovery(out outage, o *oracle, badges map[string][]badge) recovery {
	rc := recovery{what: out.what, down: out.down, up: out.up, usersCount: len(o.users)}
	first := time.Duration(-1)
	for i, u := range o.users {
		known := o.countAt(i, out.up)
		before := 0
		n := 0
		for _, b := range badges[u.device] {
			if !b.At.After(out.up) {
				before = b.Count
				continue
			}
			if d := b.At.Sub(out.up); first < 0 || d < first {
				first = d
			}
			if b.Count <= known {
				n++
				if b.Count < known {
					rc.stale++
				}
			}
		}
		if known > before {
			rc.pending++
			if d, ok := caughtUp(badges[u.device], out.up, known); ok {
				if d >= rc.current {
					rc.current = d
					rc.slowest = fmt.Sprintf("%s: %d known at recovery, badges %s", u.name, known, showBadges(badges[u.device], 8))
				}
			} else {
				rc.behind++
			}
		}
		rc.maxPushes = max(rc.maxPushes, n)
		if n > 1 {
			rc.multi++
			if len(rc.examples) < 3 {
				rc.examples = append(rc.examples, fmt.Sprintf("%s: %d known at recovery, badges %s", u.name, known, showBadges(badges[u.device], 8)))
			}
		}
	}
	rc.firstPush = first
	rc.noFirst = first < 0
	return rc
}

// currentAfter says when every user with changes during the outage had
// its count: the time after the outage, or how many never did.
func (x recovery) currentAfter() string {
	if x.behind > 0 {
		return fmt.Sprintf("never for %d", x.behind)
	}
	return round(x.current)
}

// caughtUp returns how long after t the first badge of bs at least as
// high as count came, if one did.
func caughtUp(bs []badge, t time.Time, count int) (time.Duration, bool) {
	for _, b := range bs {
		if b.At.After(t) && b.Count >= count {
			return b.At.Sub(t), true
		}
	}
	return 0, false
}

// durations summarises takeover times: p50, p99 (nearest rank) and max.
func durations(ts []takeover) string {
	if len(ts) == 0 {
		return "-"
	}
	var d []time.Duration
	never := 0
	for _, t := range ts {
		if !t.resolved {
			never++
			continue
		}
		d = append(d, t.worst)
	}
	s := ""
	if len(d) > 0 {
		s = spread(d)
	}
	if never > 0 {
		s += fmt.Sprintf(" unresolved=%d", never)
	}
	return strings.TrimSpace(s)
}

// spread summarises durations: how many, p50, p99 (nearest rank) and max;
// it sorts d.
func spread(d []time.Duration) string {
	if len(d) == 0 {
		return "n=0"
	}
	slices.Sort(d)
	rank := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", len(d), round(rank(0.5)), round(rank(0.99)), round(d[len(d)-1]))
}

func round(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

// summary formats the results as a table, one row per scenario.
func summary(rs []*result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s %-6s %6s %7s %6s %6s %6s %5s %5s %5s %5s %-42s %s\n",
		"scenario", "result", "users", "events", "wrong", "order", "lost", "subs", "dead", "unack", "crash", "takeover (kill→partitions applied again)", "recovery (first push; pending users; max pushes/user; users >1; stale; all current)")
	var rows []*result
	for _, r := range rs {
		rows = append(rows, r)
		if r.neighbour != nil {
			nb := *r.neighbour
			nb.name = "└ " + nb.name
			rows = append(rows, &nb)
		}
	}
	for _, r := range rows {
		res := "PASS"
		if r.failed() {
			res = "FAIL"
		}
		var rec []string
		for _, x := range r.recoveries {
			first := "none"
			if !x.noFirst {
				first = round(x.firstPush)
			}
			rec = append(rec, fmt.Sprintf("%s: %s; %d; %d; %d; %d; %s", x.what, first, x.pending, x.maxPushes, x.multi, x.stale, x.currentAfter()))
		}
		if r.isolation != "" {
			rec = append(rec, r.isolation)
		}
		recs := strings.Join(rec, " | ")
		if recs == "" {
			recs = "-"
		}
		fmt.Fprintf(&b, "%-22s %-6s %6d %7d %6d %6d %6d %5d %5d %5d %5d %-42s %s\n",
			r.name, res, r.users, r.events, len(r.wrong), len(r.outOfOrder), len(r.lost), len(r.subsLost), r.dead, len(r.unacked)+len(r.rejected), len(r.crashes), durations(r.takeovers), recs)
	}
	return b.String()
}

// details formats a result's measurements and evidence for the log.
func details(r *result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: %d users, %d events acknowledged, %d retries, ingest answers %v, settled=%v in %s, run %s\n",
		r.name, r.users, r.events, r.retries, r.answers, r.settled, round(r.settle), round(r.duration))
	for _, t := range r.takeovers {
		fmt.Fprintf(&b, "  takeover after killing %s at %s (owned %v): worst %s resolved=%v [%s]\n", t.target, t.at.Format(timeFmt), t.owns, round(t.worst), t.resolved, t.detail)
	}
	for _, x := range r.recoveries {
		fmt.Fprintf(&b, "  after %s (%s to %s): first push %s (none=%v), %d of %d users had changes during it, max %d pushes per user with counts known at recovery, %d users got more than one, %d stale pushes, every one of them current after %s\n",
			x.what, x.down.Format(timeFmt), x.up.Format(timeFmt), round(x.firstPush), x.noFirst, x.pending, x.usersCount, x.maxPushes, x.multi, x.stale, x.currentAfter())
		for _, ex := range x.examples {
			fmt.Fprintf(&b, "    e.g. %s\n", ex)
		}
		if x.slowest != "" {
			fmt.Fprintf(&b, "    current last: %s\n", x.slowest)
		}
	}
	if r.dead > 0 {
		fmt.Fprintf(&b, "  dead letters: %d\n", r.dead)
		for _, line := range r.deadReasons() {
			fmt.Fprintf(&b, "    %s\n", line)
		}
	}
	if len(r.provider) > 0 {
		fmt.Fprintf(&b, "  the test provider saw protocol errors: %v\n", r.provider)
	}
	for _, c := range r.crashes {
		fmt.Fprintf(&b, "  crash: %s\n", c)
	}
	for _, n := range r.notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	if r.isolation != "" {
		fmt.Fprintf(&b, "  lateness: %s\n", r.isolation)
	}
	if r.neighbour != nil {
		b.WriteString(details(r.neighbour))
	}
	return b.String()
}
