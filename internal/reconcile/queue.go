package reconcile

import (
	"container/heap"
	"time"
)

// queue holds the users due for a check, earliest first, each at most
// once. It is not safe for concurrent use.
type queue struct {
	byKey map[string]*entry
	heap  entries
	max   int
}

// entry is one user waiting for a check.
type entry struct {
	key   string // the user's KV key
	user  User
	due   time.Time
	tries int // checks that ended Behind or Raced
	// followUntil is when follow-up checks of a user whose source does not
	// report reads end (zero: no follow-up).
	followUntil time.Time
	index       int
}

func newQueue(max int) *queue {
	return &queue{byKey: make(map[string]*entry), max: max}
}

// add queues the check in, or, when its user is queued already, moves
// that check earlier and its follow-up later as in asks. It reports false
// when the queue is full and the user was not queued.
func (q *queue) add(in entry) bool {
	if e, ok := q.byKey[in.key]; ok {
		if in.followUntil.After(e.followUntil) {
			e.followUntil = in.followUntil
		}
		if in.due.Before(e.due) {
			e.due = in.due
			heap.Fix(&q.heap, e.index)
		}
		return true
	}
	if len(q.byKey) >= q.max {
		return false
	}
	e := &in
	q.byKey[e.key] = e
	heap.Push(&q.heap, e)
	return true
}

// remove drops the user's check, if queued.
func (q *queue) remove(key string) {
	if e, ok := q.byKey[key]; ok {
		heap.Remove(&q.heap, e.index)
		delete(q.byKey, key)
	}
}

// popDue removes and returns up to n users due at or before now, earliest
// first.
func (q *queue) popDue(now time.Time, n int) []*entry {
	var out []*entry
	for len(out) < n && len(q.heap) > 0 && !q.heap[0].due.After(now) {
		e := heap.Pop(&q.heap).(*entry)
		delete(q.byKey, e.key)
		out = append(out, e)
	}
	return out
}

// next returns when the earliest check is due.
func (q *queue) next() (time.Time, bool) {
	if len(q.heap) == 0 {
		return time.Time{}, false
	}
	return q.heap[0].due, true
}

func (q *queue) len() int { return len(q.heap) }

// entries is a min-heap of entries by due time.
type entries []*entry

func (h entries) Len() int           { return len(h) }
func (h entries) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h entries) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *entries) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *entries) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
