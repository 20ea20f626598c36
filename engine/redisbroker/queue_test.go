package redisbroker

import (
	"strconv"
	"testing"
)

func TestFIFOAcrossBlocks(t *testing.T) {
	t.Parallel()
	var q fifo[pubItem]
	next, want := 0, 0
	push := func(k int) {
		for range k {
			q.push(pubItem{rc: strconv.Itoa(next), cseq: uint64(next)})
			next++
		}
	}
	pop := func(k int) {
		got := q.peek(nil, k)
		if len(got) != min(k, next-want) {
			t.Fatalf("peek(%d) gave %d items with %d queued", k, len(got), next-want)
		}
		q.each(len(got), func(i int, it *pubItem) { it.start = i })
		for i, it := range q.peek(nil, len(got)) {
			if it.cseq != uint64(want+i) || it.start != i {
				t.Fatalf("item %d: %+v, want cseq %d marked %d", i, it, want+i, i)
			}
		}
		q.pop(len(got))
		want += len(got)
		if q.len() != next-want {
			t.Fatalf("len %d, want %d", q.len(), next-want)
		}
	}
	for _, step := range []struct{ push, pop int }{
		{1, 1}, {blockItems, 3}, {blockItems * 2, blockItems + 5}, {7, 1000}, {0, 1}, {blockItems*3 + 1, blockItems * 3}, {0, 10},
	} {
		push(step.push)
		pop(step.pop)
	}
	q.reset()
	if q.len() != 0 || len(q.peek(nil, 10)) != 0 {
		t.Fatal("not empty after reset")
	}
}
