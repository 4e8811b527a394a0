package reconcile

import (
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	q := newQueue(3)
	steps := []struct {
		do      func() any
		want    any
		comment string
	}{
		{func() any { return q.add(entry{key: "a", due: at(10)}) }, true, "queued"},
		{func() any { return q.add(entry{key: "b", due: at(5)}) }, true, "queued first"},
		{func() any { return q.add(entry{key: "a", due: at(20)}) }, true, "a later check keeps the earlier"},
		{func() any { return q.add(entry{key: "c", due: at(30)}) }, true, "third"},
		{func() any { return q.add(entry{key: "d", due: at(1)}) }, false, "full"},
		{func() any { return q.add(entry{key: "c", due: at(2)}) }, true, "moved earlier"},
		{func() any { n, _ := q.next(); return n }, at(2), "earliest"},
		{func() any { return keys(q.popDue(at(4), 10)) }, "c", "only c is due"},
		{func() any { q.remove("b"); return q.len() }, 1, "b removed"},
		{func() any { return q.add(entry{key: "a", due: at(50), followUntil: at(90)}) }, true, "a follow-up window"},
		{func() any { return q.byKey["a"].followUntil }, at(90), "the window is kept"},
		{func() any { return keys(q.popDue(at(100), 10)) }, "a", "a at 10, not 20 or 50"},
		{func() any { _, ok := q.next(); return ok }, false, "empty"},
	}
	for i, s := range steps {
		if got := s.do(); got != s.want {
			t.Fatalf("step %d (%s): got %v, want %v", i, s.comment, got, s.want)
		}
	}
}

func keys(es []*entry) string {
	s := ""
	for _, e := range es {
		s += e.key
	}
	return s
}
