package engine_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/shard/transport"
)

// wedge is a transport whose TryWrite blocks until released: it stalls its
// shard so the broadcast queue behind it fills up deterministically. (A real
// transport never blocks in TryWrite; this one breaks the rule on purpose.)
type wedge struct {
	release chan struct{}
	entered chan struct{}
	once    sync.Once
	frames  atomic.Int64
}

func newWedge() *wedge { return &wedge{release: make(chan struct{}), entered: make(chan struct{}, 1)} }

func (w *wedge) TryWrite(bufs [][]byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	w.frames.Add(int64(len(bufs)))
	return n, nil
}
func (w *wedge) Write(bufs [][]byte, _ time.Time) (int, error) { return w.TryWrite(bufs) }
func (w *wedge) Close() error                                  { w.unblock(); return nil }
func (w *wedge) unblock()                                      { w.once.Do(func() { close(w.release) }) }

func TestFullBroadcastQueueDropsAndCounts(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger(), Shards: 1, ShardInbox: 1, BroadcastQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	w := newWedge()
	defer w.unblock()
	if _, err := e.Attach("wedged", w); err != nil {
		t.Fatal(err)
	}
	// First broadcast: the shard takes it and stalls in TryWrite.
	if err := e.Broadcast([]byte(`0`)); err != nil {
		t.Fatal(err)
	}
	<-w.entered
	// Then: one fills the shard inbox, one blocks the coordinator, two fill the
	// queue. Producers never block; everything after that is dropped.
	accepted, dropped := 1, 0
	for i := range 50 {
		err := e.Broadcast([]byte(`1`))
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, engine.ErrQueueFull):
			dropped++
		default:
			t.Fatalf("broadcast %d: %v", i, err)
		}
		if accepted < 5 {
			time.Sleep(10 * time.Millisecond) // let the coordinator move each one along
		}
	}
	if dropped == 0 || accepted > 5 {
		t.Fatalf("accepted %d, dropped %d: the queue is not bounded", accepted, dropped)
	}
	if got := metric(t, e, "shardhub_dropped_broadcasts_total"); got != float64(dropped) {
		t.Fatalf("dropped counter = %v, want %d", got, dropped)
	}
	w.unblock()
	waitFor(t, "accepted broadcasts delivered", func() bool { return w.frames.Load() == int64(accepted) })
	st := e.Stats()
	if st.Dropped != int64(dropped) || st.Broadcasts != int64(accepted) {
		t.Fatalf("stats = %+v", st)
	}
}

func TestAttachVirtualConnections(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger(), Shards: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	var sink transport.Sink
	conns := make([]*engine.Conn, 1000)
	for i := range conns {
		if conns[i], err = e.Attach("", &sink); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Attach(conns[0].ID(), &sink); !errors.Is(err, engine.ErrDuplicateConn) {
		t.Fatalf("duplicate Attach = %v", err)
	}
	for _, c := range conns[:10] {
		if _, err := c.Subscribe("ten"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Broadcast([]byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish("ten", []byte(`"x"`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "1010 deliveries", func() bool { return e.Stats().Deliveries == 1010 })
	for _, c := range conns[:500] {
		c.Close(engine.CloseNormal, "bye")
	}
	if got := e.Connections(); got != 500 {
		t.Fatalf("connections = %d, want 500", got)
	}
	if got := len(e.Channels()); got != 0 {
		t.Fatalf("channels after their subscribers left = %d", got)
	}
	// Routing: a connection lives on shard xxhash(id) % N, and stays there.
	counts := make([]int, e.NumShards())
	for _, c := range conns[500:] {
		counts[e.ShardOf(c.ID())]++
	}
	st := e.Stats()
	for i, s := range st.Shards {
		if s.Connections != counts[i] {
			t.Fatalf("shard %d holds %d, routing says %d", i, s.Connections, counts[i])
		}
	}
}

func TestPublishValidation(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger(), MaxMessageSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	if err := e.Publish("", []byte("1")); !errors.Is(err, engine.ErrInvalidChannel) {
		t.Fatalf("empty channel: %v", err)
	}
	if err := e.Publish("ok", make([]byte, 17)); !errors.Is(err, engine.ErrMessageTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if err := e.Broadcast(make([]byte, 17)); !errors.Is(err, engine.ErrMessageTooLarge) {
		t.Fatalf("too large broadcast: %v", err)
	}
	if err := e.Publish("nobody-listens", []byte("1")); err != nil {
		t.Fatalf("publish without subscribers: %v", err)
	}
}
