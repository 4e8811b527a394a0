package dispatcher

import "sync"

// queue is an unbounded FIFO between goroutines: Push never blocks, and C
// signals that items may be waiting. Unbounded on purpose: the sender and
// the partition workers hand each other work, and a bounded channel both
// ways could deadlock. The pushes themselves are bounded by the events a
// partition holds.
type queue[T any] struct {
	mu     sync.Mutex
	items  []T
	signal chan struct{}
}

func newQueue[T any]() *queue[T] { return &queue[T]{signal: make(chan struct{}, 1)} }

// Push appends v and signals.
func (q *queue[T]) Push(v T) {
	q.mu.Lock()
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// C is signalled after a Push.
func (q *queue[T]) C() <-chan struct{} { return q.signal }

// Take removes and returns up to n items (all when n <= 0).
func (q *queue[T]) Take(n int) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n <= 0 || n > len(q.items) {
		n = len(q.items)
	}
	out := make([]T, n)
	copy(out, q.items)
	rest := copy(q.items, q.items[n:])
	clear(q.items[rest:])
	q.items = q.items[:rest]
	if len(q.items) > 0 {
		select {
		case q.signal <- struct{}{}:
		default:
		}
	}
	return out
}

// Len is how many items wait.
func (q *queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Total sums size over the items waiting.
func (q *queue[T]) Total(size func(T) int) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, v := range q.items {
		n += size(v)
	}
	return n
}

// TakeUpTo removes and returns the first items whose sizes add up to at
// most limit, and at least one item when any waits.
func (q *queue[T]) TakeUpTo(limit int, size func(T) int) []T {
	q.mu.Lock()
	n, total := 0, 0
	for n < len(q.items) {
		k := size(q.items[n])
		if n > 0 && total+k > limit {
			break
		}
		total += k
		n++
	}
	q.mu.Unlock()
	return q.Take(n)
}
