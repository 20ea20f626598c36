package redisbroker

import "sync"

// fifo is a FIFO queue in a chain of fixed-size blocks, so pushing never
// copies what is queued (a slice would, as it grows, and keep its largest
// size) and memory follows what is queued, not a capacity. Not safe for
// concurrent use: its owner's mutex guards it.
type fifo[T any] struct {
	head, tail *block[T] // nil until the first push
	hi, ti     int       // next item to read in head; next free slot in tail
	n          int       // items queued
	spare      *block[T] // one emptied block kept for reuse: a steady flow allocates none
}

const blockItems = 128

type block[T any] struct {
	items [blockItems]T
	next  *block[T]
}

func (q *fifo[T]) len() int { return q.n }

func (q *fifo[T]) push(it T) {
	if q.tail == nil || q.ti == blockItems {
		b := q.spare
		if b != nil {
			q.spare = nil
		} else {
			b = new(block[T])
		}
		if q.tail == nil {
			q.head, q.hi = b, 0
		} else {
			q.tail.next = b
		}
		q.tail, q.ti = b, 0
	}
	q.tail.items[q.ti] = it
	q.ti++
	q.n++
}

// peek appends copies of the first max items to dst.
func (q *fifo[T]) peek(dst []T, max int) []T {
	max = min(max, q.n)
	for b, i := q.head, q.hi; max > 0; b, i = b.next, 0 {
		end := blockItems
		if b == q.tail {
			end = q.ti
		}
		k := min(end-i, max)
		dst = append(dst, b.items[i:i+k]...)
		max -= k
	}
	return dst
}

// each calls f with the first n items, in order, for updating them in place.
func (q *fifo[T]) each(n int, f func(i int, it *T)) {
	n = min(n, q.n)
	j := 0
	for b, i := q.head, q.hi; j < n; b, i = b.next, 0 {
		end := blockItems
		if b == q.tail {
			end = q.ti
		}
		for ; i < end && j < n; i++ {
			f(j, &b.items[i])
			j++
		}
	}
}

// pop drops the first n items.
func (q *fifo[T]) pop(n int) {
	n = min(n, q.n)
	q.n -= n
	for n > 0 {
		end := blockItems
		if q.head == q.tail {
			end = q.ti
		}
		k := min(end-q.hi, n)
		clear(q.head.items[q.hi : q.hi+k])
		q.hi += k
		n -= k
		if q.hi == end {
			q.advance()
		}
	}
}

// advance retires the head block, emptied.
func (q *fifo[T]) advance() {
	b := q.head
	if b == q.tail { // the last block: start it over
		q.hi, q.ti = 0, 0
		return
	}
	q.head, q.hi = b.next, 0
	b.next = nil
	if q.spare == nil {
		q.spare = b
	}
}

// reset drops everything.
func (q *fifo[T]) reset() { q.pop(q.n) }

// handoffQueue carries what a subscriber connection's reader read to its
// worker, in order. Bounded by max: offer refuses past it, and the reader
// counts the message lost; the reader never waits.
type handoffQueue struct {
	max  int
	wake chan struct{} // capacity 1: something was offered while the worker waited

	mu      sync.Mutex // guards q, waiting and closed.
	q       fifo[delivery]
	waiting bool // the worker waits on wake
	closed  bool // no more offers: the worker drains and stops
}

func newHandoffQueue(max int) *handoffQueue {
	return &handoffQueue{max: max, wake: make(chan struct{}, 1)}
}

// offer queues d, or reports false when the queue is full.
func (h *handoffQueue) offer(d delivery) bool {
	h.mu.Lock()
	if h.q.len() >= h.max {
		h.mu.Unlock()
		return false
	}
	h.q.push(d)
	wake := h.waiting
	h.waiting = false
	h.mu.Unlock()
	if wake {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// take waits for deliveries and moves up to cap(dst) of them into dst. It
// reports false once the queue is closed and empty.
func (h *handoffQueue) take(dst []delivery) ([]delivery, bool) {
	for {
		h.mu.Lock()
		if n := h.q.len(); n > 0 {
			dst = h.q.peek(dst[:0], cap(dst))
			h.q.pop(len(dst))
			h.mu.Unlock()
			return dst, true
		}
		if h.closed {
			h.mu.Unlock()
			return dst[:0], false
		}
		h.waiting = true
		h.mu.Unlock()
		<-h.wake
	}
}

// close makes take return false once the queue is empty.
func (h *handoffQueue) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *handoffQueue) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.q.len()
}
