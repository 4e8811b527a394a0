package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress shows how far a long command is: on a terminal, one line
// rewritten at most every progressEvery (count, rate, time left); always a
// summary at the end. Output that is not a terminal (a file, a pipe) gets
// only the summary, so logs stay readable.
type progress struct {
	w        io.Writer
	terminal bool
	what     string // "redriving"
	now      func() time.Time

	mu      sync.Mutex
	start   time.Time
	last    time.Time
	done    int
	total   int
	written bool
}

// progressEvery bounds how often the line is rewritten.
const progressEvery = 250 * time.Millisecond

// newProgress reports on w, as a terminal when w is one.
func newProgress(w io.Writer, what string) *progress {
	return &progress{w: w, terminal: isTerminal(w), what: what, now: time.Now}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// update records that done of total are done.
func (p *progress) update(done, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.start.IsZero() {
		p.start = now
	}
	p.done, p.total = done, total
	if !p.terminal || (now.Sub(p.last) < progressEvery && done < total) {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start)
	line := fmt.Sprintf("%s: %d/%d (%d%%)", p.what, done, total, done*100/max(total, 1))
	if rate := float64(done) / elapsed.Seconds(); done > 0 && elapsed > 0 {
		line += fmt.Sprintf(", %.0f/s", rate)
		if left := total - done; left > 0 {
			line += fmt.Sprintf(", about %s left", (time.Duration(float64(left) / rate * float64(time.Second))).Round(time.Second))
		}
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.written = true
}

// finish ends the line and prints the summary: how many, how long, how
// fast.
func (p *progress) finish(noun string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.written {
		fmt.Fprint(p.w, "\r\033[K")
	}
	elapsed := time.Duration(0)
	if !p.start.IsZero() {
		elapsed = p.now().Sub(p.start)
	}
	line := fmt.Sprintf("%d %s in %s", p.done, noun, elapsed.Round(time.Millisecond))
	if elapsed > 0 && p.done > 0 {
		line += fmt.Sprintf(" (%.0f/s)", float64(p.done)/elapsed.Seconds())
	}
	fmt.Fprintln(p.w, line)
}
