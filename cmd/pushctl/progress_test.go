package main

import (
	"strings"
	"testing"
	"time"
)

func TestProgress(t *testing.T) {
	tests := []struct {
		name     string
		terminal bool
		steps    []time.Duration // when each of 10 items is done, from the start
		want     []string
		notWant  []string
	}{
		{
			name: "not a terminal: the summary only", terminal: false,
			steps: []time.Duration{0, time.Second, 2 * time.Second},
			want:  []string{"3 letters in 2s (2/s)\n"}, notWant: []string{"\r", "redriving"},
		},
		{
			name: "terminal: a line with rate and time left, rewritten, then the summary", terminal: true,
			steps: []time.Duration{0, 100 * time.Millisecond, time.Second, 2 * time.Second},
			want:  []string{"\r\033[Kredriving: 1/10 (10%)", "redriving: 3/10 (30%), 3/s, about 2s left", "redriving: 4/10 (40%), 2/s, about 3s left", "4 letters in 2s (2/s)\n"},
			// The second item came within progressEvery of the first: no line.
			notWant: []string{"2/10"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			clock := start
			p := &progress{w: &b, terminal: tt.terminal, what: "redriving", now: func() time.Time { return clock }}
			for i, at := range tt.steps {
				clock = start.Add(at)
				p.update(i+1, 10)
			}
			p.finish("letters")
			out := b.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%q", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%q", w, out)
				}
			}
		})
	}
}
