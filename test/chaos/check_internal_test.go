package chaos

import (
	"testing"
	"time"
)

func TestCaughtUp(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	bs := []badge{{Count: 5, At: ms(-100)}, {Count: 3, At: ms(200)}, {Count: 6, At: ms(900)}}
	tests := []struct {
		name  string
		count int
		want  time.Duration
		ok    bool
	}{
		{"a badge before the outage's end does not count", 5, 900 * time.Millisecond, true},
		{"its own count after it", 3, 200 * time.Millisecond, true},
		{"the first one as high", 4, 900 * time.Millisecond, true},
		{"never", 7, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := caughtUp(bs, t0, tt.count)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("caughtUp(%d) = %s, %v; want %s, %v", tt.count, got, ok, tt.want, tt.ok)
			}
		})
	}
	for _, tt := range []struct {
		r    recovery
		want string
	}{
		{recovery{current: 1234 * time.Millisecond}, "1.2s"},
		{recovery{current: time.Second, behind: 2}, "never for 2"},
	} {
		if got := tt.r.currentAfter(); got != tt.want {
			t.Errorf("currentAfter(%+v) = %q, want %q", tt.r, got, tt.want)
		}
	}
}
