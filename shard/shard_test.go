package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shardhub/shardhub/shard/frame"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a transport that keeps every byte written, optionally taking at
// most limit bytes per TryWrite (0 = no limit) to force the drain path.
type recorder struct {
	mu     sync.Mutex
	buf    []byte
	limit  int
	closes atomic.Int32
	closed bool
}

func (r *recorder) TryWrite(bufs [][]byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, io.ErrClosedPipe
	}
	n := 0
	for _, b := range bufs {
		if r.limit > 0 && n+len(b) > r.limit {
			b = b[:r.limit-n]
		}
		r.buf = append(r.buf, b...)
		n += len(b)
		if r.limit > 0 && n >= r.limit {
			break
		}
	}
	return n, nil
}

func (r *recorder) Write(bufs [][]byte, _ time.Time) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, io.ErrClosedPipe
	}
	n := 0
	for _, b := range bufs {
		r.buf = append(r.buf, b...)
		n += len(b)
	}
	return n, nil
}

func (r *recorder) Close() error {
	r.closes.Add(1)
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

type wsFrame struct {
	op      frame.Opcode
	payload []byte
}

// frames parses the complete unmasked frames written so far; a frame still being
// written at the end is left out (see tail).
func (r *recorder) frames(tb testing.TB) []wsFrame {
	tb.Helper()
	out, _ := r.parse()
	return out
}

// tail returns the bytes after the last complete frame: zero once writes are done.
func (r *recorder) tail() int {
	_, rest := r.parse()
	return rest
}

func (r *recorder) parse() ([]wsFrame, int) {
	r.mu.Lock()
	b := append([]byte(nil), r.buf...)
	r.mu.Unlock()
	var out []wsFrame
	for len(b) > 0 {
		if len(b) < 2 {
			return out, len(b)
		}
		op := frame.Opcode(b[0] & 0x0F)
		n, h := int(b[1]&0x7F), 2
		switch n {
		case 126:
			n, h = int(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			n, h = int(binary.BigEndian.Uint64(b[2:])), 10
		}
		if len(b) < h+n {
			return out, len(b)
		}
		out = append(out, wsFrame{op: op, payload: b[h : h+n]})
		b = b[h+n:]
	}
	return out, 0
}

func (r *recorder) texts(tb testing.TB) []string {
	tb.Helper()
	var out []string
	for _, f := range r.frames(tb) {
		if f.op == frame.OpText {
			out = append(out, string(f.payload))
		}
	}
	return out
}

// blocker never takes a byte: TryWrite reports "would block" and Write blocks
// until Close, like a client that stopped reading.
type blocker struct {
	once   sync.Once
	closed chan struct{}
	closes atomic.Int32
}

func newBlocker() *blocker { return &blocker{closed: make(chan struct{})} }

func (b *blocker) TryWrite([][]byte) (int, error) { return 0, nil }
func (b *blocker) Write([][]byte, time.Time) (int, error) {
	<-b.closed
	return 0, io.ErrClosedPipe
}
func (b *blocker) Close() error {
	b.closes.Add(1)
	b.once.Do(func() { close(b.closed) })
	return nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startShard(tb testing.TB, cfg Config) *Shard {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s := New(cfg)
	go s.Run()
	tb.Cleanup(func() {
		s.Shutdown()
		<-s.Done()
	})
	return s
}

func textFrame(s string) *frame.Frame {
	f := frame.New(len(s))
	f.AppendBytes([]byte(s))
	return f.Seal(frame.OpText).SetMessage()
}

// waitFor polls cond until it holds, failing after a generous deadline; it waits
// for asynchronous effects, it does not measure speed.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRegisterIsVisibleWhenItReturns(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{})
	for i := range 200 {
		rec := &recorder{}
		c := NewConn(fmt.Sprintf("c%d", i), rec)
		if err := s.Register(c); err != nil {
			t.Fatal(err)
		}
		// No sleep: the very next request must see it.
		if got := s.Lookup(c.ID()); got != c {
			t.Fatalf("Lookup(%s) right after Register = %v", c.ID(), got)
		}
		s.SendTo(c.ID(), textFrame("hi"))
		waitFor(t, "private delivery", func() bool { return len(rec.texts(t)) == 1 })
	}
	if got := s.Counters().Conns; got != 200 {
		t.Fatalf("Conns = %d, want 200", got)
	}
}

func TestDuplicateIDRejected(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{})
	if err := s.Register(NewConn("x", &recorder{})); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(NewConn("x", &recorder{})); !errors.Is(err, ErrDuplicateID) {
		t.Fatalf("second Register = %v, want ErrDuplicateID", err)
	}
}

func TestBroadcastBatchesReachEveryConnInOrder(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{})
	recs := make([]*recorder, 50)
	for i := range recs {
		recs[i] = &recorder{limit: 0}
		if i%5 == 0 {
			recs[i].limit = 7 // partial writes: forces the queue and the drain goroutine
		}
		if err := s.Register(NewConn(fmt.Sprintf("c%d", i), recs[i])); err != nil {
			t.Fatal(err)
		}
	}
	const n = 300
	frames := make([]*frame.Frame, n)
	for i := range n {
		frames[i] = textFrame(fmt.Sprintf("msg-%03d", i))
		frames[i].Retain(1) // keep one reference to check that the shard releases its own
		s.Broadcast(frames[i])
	}
	for i, r := range recs {
		waitFor(t, fmt.Sprintf("conn %d to get %d frames", i, n), func() bool { return len(r.texts(t)) == n })
		if rest := r.tail(); rest != 0 {
			t.Fatalf("conn %d: %d bytes after the last complete frame", i, rest)
		}
		for j, got := range r.texts(t) {
			if want := fmt.Sprintf("msg-%03d", j); got != want {
				t.Fatalf("conn %d frame %d = %q, want %q", i, j, got, want)
			}
		}
	}
	for i, f := range frames {
		if refs := f.Refs(); refs != 1 {
			t.Fatalf("frame %d holds %d references after delivery, want only the test's 1", i, refs)
		}
	}
	if got := s.Counters().Written; got != int64(n*len(recs)) {
		t.Fatalf("Written = %d, want %d", got, n*len(recs))
	}
}

func TestChannelsAndOnChannelHook(t *testing.T) {
	t.Parallel()
	type event struct {
		ch     string
		active bool
	}
	var mu sync.Mutex
	var events []event
	s := startShard(t, Config{OnChannel: func(_ int, ch string, active bool) {
		mu.Lock()
		events = append(events, event{ch, active})
		mu.Unlock()
	}})
	a, b, c := &recorder{}, &recorder{}, &recorder{}
	ca, cb, cc := NewConn("a", a), NewConn("b", b), NewConn("c", c)
	for _, conn := range []*Conn{ca, cb, cc} {
		if err := s.Register(conn); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []struct {
		c  *Conn
		ch string
	}{{ca, "news"}, {cb, "news"}, {cb, "sport"}} {
		if ok, err := s.Subscribe(sub.c, sub.ch); !ok || err != nil {
			t.Fatalf("Subscribe(%s, %s) = %v, %v", sub.c.ID(), sub.ch, ok, err)
		}
	}
	if ok, _ := s.Subscribe(ca, "news"); ok {
		t.Fatal("second Subscribe to the same channel reported a new subscription")
	}
	s.Publish("news", "", textFrame("n1"))
	s.Publish("sport", "", textFrame("s1"))
	s.Publish("nobody", "", textFrame("x"))
	waitFor(t, "b to get both", func() bool { return len(b.texts(t)) == 2 })
	waitFor(t, "a to get news", func() bool { return len(a.texts(t)) == 1 })
	if got := c.texts(t); len(got) != 0 {
		t.Fatalf("unsubscribed conn got %q", got)
	}
	if !s.Unsubscribe(ca, "news") || s.Unsubscribe(ca, "news") {
		t.Fatal("Unsubscribe should report true once, then false")
	}
	s.Unregister(cb) // drops b's two subscriptions: news and sport become empty
	st := s.Stats()
	if st.Channels != 0 || st.Subscriptions != 0 || st.Conns != 2 {
		t.Fatalf("after unsubscribe/unregister: %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[event]int{{"news", true}: 1, {"sport", true}: 1, {"news", false}: 1, {"sport", false}: 1}
	if len(events) != 4 {
		t.Fatalf("OnChannel events = %v", events)
	}
	for _, e := range events {
		want[e]--
	}
	for e, n := range want {
		if n != 0 {
			t.Fatalf("OnChannel events = %v (mismatch on %v)", events, e)
		}
	}
}

func TestSlowConsumerEvictedOthersGetEverything(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{Limits: Limits{MaxMessages: 16, MaxBytes: 1 << 20}})
	slow := newBlocker()
	cs := NewConn("slow", slow)
	if err := s.Register(cs); err != nil {
		t.Fatal(err)
	}
	fast := make([]*recorder, 10)
	for i := range fast {
		fast[i] = &recorder{}
		if err := s.Register(NewConn(fmt.Sprintf("fast%d", i), fast[i])); err != nil {
			t.Fatal(err)
		}
	}
	const n = 100
	for i := range n {
		s.Broadcast(textFrame(fmt.Sprintf("m%d", i)))
	}
	for i, r := range fast {
		waitFor(t, fmt.Sprintf("fast conn %d", i), func() bool { return len(r.texts(t)) == n })
	}
	waitFor(t, "slow consumer eviction", func() bool { return s.Counters().Forced == 1 })
	waitFor(t, "evicted conn removed", func() bool { return s.Lookup("slow") == nil })
	if !cs.Evicted() {
		t.Fatal("slow conn not marked evicted")
	}
	if got := slow.closes.Load(); got != 1 {
		t.Fatalf("slow transport closed %d times, want 1", got)
	}
	if got := s.Counters().Conns; got != 10 {
		t.Fatalf("Conns = %d after eviction, want 10", got)
	}
}

func TestByteLimitEvicts(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{Limits: Limits{MaxMessages: 1000, MaxBytes: 1000}})
	slow := newBlocker()
	cs := NewConn("slow", slow)
	if err := s.Register(cs); err != nil {
		t.Fatal(err)
	}
	big := string(make([]byte, 400))
	for range 4 {
		s.Broadcast(textFrame(big))
	}
	waitFor(t, "eviction on bytes", func() bool { return s.Counters().Forced == 1 })
}

func TestShutdownEmptyShardReturnsAtOnce(t *testing.T) {
	t.Parallel()
	s := New(Config{ShutdownGrace: time.Hour, Logger: quietLogger()})
	go s.Run()
	s.Shutdown()
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("an empty shard waited for its grace window")
	}
}

func TestShutdownSendsGoingAwayAndClosesOnce(t *testing.T) {
	t.Parallel()
	s := New(Config{ShutdownGrace: 50 * time.Millisecond, Logger: quietLogger()})
	go s.Run()
	recs := make([]*recorder, 20)
	for i := range recs {
		recs[i] = &recorder{}
		if err := s.Register(NewConn(fmt.Sprintf("c%d", i), recs[i])); err != nil {
			t.Fatal(err)
		}
	}
	s.Shutdown()
	s.Shutdown() // idempotent
	<-s.Done()
	for i, r := range recs {
		fs := r.frames(t)
		if len(fs) != 1 || fs[0].op != frame.OpClose {
			t.Fatalf("conn %d got %v, want one close frame", i, fs)
		}
		if code := binary.BigEndian.Uint16(fs[0].payload); code != CloseGoingAway {
			t.Fatalf("conn %d close code %d, want 1001", i, code)
		}
		if got := r.closes.Load(); got != 1 {
			t.Fatalf("conn %d transport closed %d times, want exactly 1", i, got)
		}
	}
	if err := s.Register(NewConn("late", &recorder{})); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Register after shutdown = %v, want ErrShutdown", err)
	}
	if st := s.Stats(); st.Counters.Conns != 0 {
		t.Fatalf("conns left after shutdown: %d", st.Counters.Conns)
	}
}

// During the grace window the shard keeps answering: Stats and Register must not
// hang behind a connection that never leaves.
func TestShutdownGraceKeepsServing(t *testing.T) {
	t.Parallel()
	s := New(Config{ShutdownGrace: 2 * time.Second, Logger: quietLogger()})
	go s.Run()
	if err := s.Register(NewConn("stays", &recorder{})); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			_ = s.Stats()
			if err := s.Register(NewConn("new", &recorder{})); !errors.Is(err, ErrShutdown) {
				t.Errorf("Register during grace = %v, want ErrShutdown", err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-s.Done():
		t.Fatal("the grace window ended before 50 requests were answered")
	}
	<-s.Done()
}

// Concurrent Register and Shutdown: every conn's transport is closed exactly once,
// either by the shard (it was registered) or by the caller (Register failed).
func TestConcurrentRegisterDuringShutdown(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		s := New(Config{ShutdownGrace: time.Millisecond, Logger: quietLogger()})
		go s.Run()
		const n = 64
		recs := make([]*recorder, n)
		var wg sync.WaitGroup
		for i := range n {
			recs[i] = &recorder{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := NewConn(fmt.Sprintf("r%d-%d", round, i), recs[i])
				if err := s.Register(c); err != nil {
					c.Abort() // the caller still owns c
				}
			}()
			if i == n/2 {
				s.Shutdown()
			}
		}
		wg.Wait()
		<-s.Done()
		for i, r := range recs {
			if got := r.closes.Load(); got != 1 {
				t.Fatalf("round %d conn %d closed %d times, want 1", round, i, got)
			}
		}
	}
}

func TestDeliverAfterStopReleasesFrame(t *testing.T) {
	t.Parallel()
	s := New(Config{Logger: quietLogger(), InboxSize: 1})
	go s.Run()
	s.Shutdown()
	<-s.Done()
	f := textFrame("late")
	f.Retain(1)
	// Fill the inbox, then a blocking post must give up on a stopped shard.
	s.tryPost(cmd{kind: cmdBroadcast, frame: textFrame("fill")})
	if s.Broadcast(f) {
		t.Fatal("Broadcast on a stopped shard reported success")
	}
	if got := f.Refs(); got != 1 {
		t.Fatalf("refs = %d, want 1: a refused delivery must release its reference", got)
	}
}

func TestMixedBatchKeepsPerConnOrder(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{})
	rec := &recorder{}
	c := NewConn("c", rec)
	if err := s.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Subscribe(c, "ch"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 200 {
		msg := fmt.Sprintf("%d", i)
		want = append(want, msg)
		switch f := textFrame(msg); i % 3 {
		case 0:
			s.Broadcast(f)
		case 1:
			s.Publish("ch", "", f)
		case 2:
			s.SendTo("c", f)
		}
	}
	waitFor(t, "all 200", func() bool { return len(rec.texts(t)) == 200 })
	for i, got := range rec.texts(t) {
		if got != want[i] {
			t.Fatalf("frame %d = %q, want %q", i, got, want[i])
		}
	}
}

func TestSubscriptionLimit(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{MaxSubscriptions: 2})
	c := NewConn("c", &recorder{})
	if err := s.Register(c); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"a", "b"} {
		if _, err := s.Subscribe(c, ch); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Subscribe(c, "c"); !errors.Is(err, ErrTooManySubscriptions) {
		t.Fatalf("third Subscribe = %v, want ErrTooManySubscriptions", err)
	}
	if _, err := s.Subscribe(NewConn("unregistered", &recorder{}), "a"); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("Subscribe of unregistered conn = %v, want ErrConnClosed", err)
	}
}

func TestWriteErrorRemovesConn(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{})
	rec := &recorder{}
	c := NewConn("c", rec)
	if err := s.Register(c); err != nil {
		t.Fatal(err)
	}
	rec.Close() // the peer went away: the next write fails
	rec.closes.Store(0)
	s.Broadcast(textFrame("x"))
	waitFor(t, "failed conn removed", func() bool { return s.Counters().Conns == 0 })
	if got := s.Counters().WriteErrors; got != 1 {
		t.Fatalf("WriteErrors = %d, want 1", got)
	}
}
