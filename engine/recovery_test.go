package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// memHistory is an in-process HistoryBroker with the semantics the Redis one
// has: a publication gets its offset when stored, then comes back to the
// engine through HandlePublication from the broker's own goroutine (as
// Redis's pub/sub reader would); Hold and History answer at once unless the
// test makes History wait. It lets the recovery tests control timing exactly.
type memHistory struct {
	h engine.BrokerHandler

	mu   sync.Mutex
	seq  int
	log  []engine.Publication
	gate chan struct{} // when set, History waits for it to close

	out  chan engine.Publication // to the delivery goroutine, in offset order
	quit chan struct{}
	done chan struct{}
}

var _ engine.HistoryBroker = (*memHistory)(nil)

func newMemHistory() *memHistory {
	return &memHistory{out: make(chan engine.Publication, 1<<16), quit: make(chan struct{}), done: make(chan struct{})}
}

func (b *memHistory) Start(h engine.BrokerHandler) error {
	b.h = h
	go func() {
		defer close(b.done)
		for {
			select {
			case p := <-b.out:
				b.h.HandlePublication("h", p.Offset, p.Data)
			case <-b.quit:
				return
			}
		}
	}()
	return nil
}

func (b *memHistory) Publish(channel string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	p := engine.Publication{Offset: strconv.Itoa(b.seq) + "-0", Data: append([]byte(nil), data...)}
	b.log = append(b.log, p)
	b.out <- p // under the lock: delivery order is offset order
	return nil
}

func (b *memHistory) Broadcast([]byte) error         { return nil }
func (b *memHistory) Subscribe(string)               {}
func (b *memHistory) Unsubscribe(string)             {}
func (b *memHistory) Close() error                   { close(b.quit); <-b.done; return nil }
func (b *memHistory) HasHistory(channel string) bool { return channel == "h" }
func (b *memHistory) Hold(context.Context, string) (func() bool, error) {
	return func() bool { return true }, nil
}

func (b *memHistory) History(ctx context.Context, _ string, since string) ([]engine.Publication, bool, error) {
	b.mu.Lock()
	gate := b.gate
	b.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []engine.Publication
	for _, p := range b.log {
		if engine.CompareOffsets(p.Offset, since) > 0 {
			out = append(out, p)
		}
	}
	return out, true, nil
}

// seqOf reads the sequence number the tests publish as data.
func seqOf(tb testing.TB, m msg) int {
	tb.Helper()
	var v struct{ N int }
	if err := json.Unmarshal(m.Data, &v); err != nil {
		tb.Fatalf("data %s: %v", m.Data, err)
	}
	return v.N
}

// TestConcurrentRecoveriesDuringAPublishStream: 100 clients drop their
// connection and come back with the offset of the last publication they saw,
// all at once, while a publisher keeps publishing; each must get every
// publication exactly once, in order, across the seam.
func TestConcurrentRecoveriesDuringAPublishStream(t *testing.T) {
	t.Parallel()
	b := newMemHistory()
	// Queues big enough that nothing is dropped for overload (that is the
	// ledger's business, tested elsewhere): any gap here is the seam's fault.
	ts := startServer(t, engine.Config{Broker: b, InboundRate: -1, BroadcastQueue: 1 << 16}, server.Options{})
	const clients, total = 100, 3000
	var published atomic.Int64
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 1; i <= total; i++ {
			for ts.e.Publish("h", fmt.Appendf(nil, `{"n":%d}`, i)) != nil {
				time.Sleep(time.Millisecond)
			}
			published.Store(int64(i))
			if i%20 == 0 {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}
	}()
	defer func() { close(stop); <-pubDone }()

	type state struct {
		got  []int
		last string
	}
	states := make([]state, clients)
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &states[i]
			// First connection: subscribe and take a few publications.
			c := dial(t, ts, "", nil)
			c.send(map[string]any{"type": "subscribe", "channel": "h"})
			c.next("subscribed")
			for range 5 + i%7 {
				m := c.next("message")
				st.got = append(st.got, seqOf(t, m))
				st.last = m.Offset
			}
			_ = c.ws.NetConn().Close()
			// Come back and recover from the last offset seen.
			c2 := dial(t, ts, "", nil)
			c2.send(map[string]any{"type": "subscribe", "channel": "h", "since": st.last})
			if r := c2.next("subscribed"); r.Recovered == nil || !*r.Recovered {
				errs <- fmt.Sprintf("client %d: not recovered: %+v", i, r)
				return
			}
			for len(st.got) == 0 || st.got[len(st.got)-1] < total {
				m := c2.next("message")
				st.got = append(st.got, seqOf(t, m))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if d := ts.e.Ledger().Messages.Dropped; d[engine.DropQueueFull] != 0 {
		t.Fatalf("messages dropped for overload: %v", d)
	}
	for i, st := range states {
		for j := 1; j < len(st.got); j++ {
			if st.got[j] != st.got[j-1]+1 {
				t.Fatalf("client %d: %d followed by %d (gap or duplicate at the seam)", i, st.got[j-1], st.got[j])
			}
		}
	}
}

// TestSlowHistoryFetchStallsNobody: while one recovery waits for the history,
// the broker keeps delivering live publications to everyone else, and the
// recovering client then gets the missed and the live ones exactly once, in
// order.
func TestSlowHistoryFetchStallsNobody(t *testing.T) {
	t.Parallel()
	b := newMemHistory()
	ts := startServer(t, engine.Config{Broker: b}, server.Options{})
	live := dial(t, ts, "", nil)
	live.send(map[string]any{"type": "subscribe", "channel": "h"})
	live.next("subscribed")
	pub := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := ts.e.Publish("h", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub(1, 10)
	var last string
	for i := 1; i <= 10; i++ {
		m := live.next("message")
		if seqOf(t, m) != i {
			t.Fatalf("live got %d, want %d", seqOf(t, m), i)
		}
		if i == 4 {
			last = m.Offset
		}
	}
	gate := make(chan struct{})
	b.mu.Lock()
	b.gate = gate
	b.mu.Unlock()
	rec := dial(t, ts, "", nil)
	rec.send(map[string]any{"type": "subscribe", "channel": "h", "since": last})
	// The history read is stuck; publications go on and reach the live client.
	waitFor(t, "the recovery to be waiting", func() bool {
		return strings.Contains(goroutines(), "memHistory).History")
	})
	pub(11, 30)
	for i := 11; i <= 30; i++ {
		if m := live.next("message"); seqOf(t, m) != i {
			t.Fatalf("live got %d during the slow recovery, want %d", seqOf(t, m), i)
		}
	}
	close(gate)
	if r := rec.next("subscribed"); r.Recovered == nil || !*r.Recovered {
		t.Fatalf("not recovered: %+v", r)
	}
	pub(31, 40)
	for i := 5; i <= 40; i++ {
		if m := rec.next("message"); seqOf(t, m) != i {
			t.Fatalf("recovering client got %d, want %d", seqOf(t, m), i)
		}
	}
	rec.none(100 * time.Millisecond)
}

// goroutines returns every goroutine's stack.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestBrokerBurstWaitsForRoom: a burst from the broker (an outage's backlog
// flushed at once) larger than the broadcast queue waits for room instead of
// being dropped: the broker hands messages over from a goroutine that may wait.
func TestBrokerBurstWaitsForRoom(t *testing.T) {
	t.Parallel()
	b := newMemHistory()
	ts := startServer(t, engine.Config{Broker: b, BroadcastQueue: 4, ShardInbox: 4}, server.Options{})
	c := dial(t, ts, "", nil)
	c.send(map[string]any{"type": "subscribe", "channel": "h"})
	c.next("subscribed")
	const n = 2000
	for i := 1; i <= n; i++ {
		if err := ts.e.Publish("h", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= n; i++ {
		if m := c.next("message"); seqOf(t, m) != i {
			t.Fatalf("got %d, want %d", seqOf(t, m), i)
		}
	}
	if d := ts.e.Ledger().Messages.Dropped[engine.DropQueueFull]; d != 0 {
		t.Fatalf("%d dropped for a full queue", d)
	}
}
