package shard

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// balanced checks the delivery ledger of a quiet shard.
func balanced(tb testing.TB, s *Shard) Counters {
	tb.Helper()
	_ = s.Barrier() // everything posted so far is handled (or the shard stopped)
	var c Counters
	waitFor(tb, "a quiet, balanced ledger", func() bool {
		c = s.Counters()
		return c.Pending == 0 && c.Recipients == c.Written+c.DroppedSlow+c.DroppedClosed+c.DroppedShutdown
	})
	return c
}

// TestLedgerBalancesUnderFaults: broadcasts, publications and private
// messages to connections that keep up, one that stalls, one whose writes
// fail and one that closes: every recipient ends written or dropped with its
// reason, and what each connection was written is what its transport got.
func TestLedgerBalancesUnderFaults(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{Limits: Limits{MaxMessages: 32}})
	var good []*recorder
	for i := range 8 {
		r := &recorder{}
		if i%2 == 0 {
			r.limit = 40 // partial writes: queues and drain goroutines
		}
		good = append(good, r)
		c := NewConn(fmt.Sprintf("g%d", i), r)
		if err := s.Register(c); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Subscribe(c, "ch"); err != nil {
			t.Fatal(err)
		}
	}
	slow := NewConn("slow", newBlocker())
	failing := &recorder{}
	broken := NewConn("broken", failing)
	closing := NewConn("closing", &recorder{})
	for _, c := range []*Conn{slow, broken, closing} {
		if err := s.Register(c); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Subscribe(c, "ch"); err != nil {
			t.Fatal(err)
		}
	}
	const n = 300
	for i := range n {
		switch i % 3 {
		case 0:
			s.Broadcast(textFrame(fmt.Sprintf("b%d", i)))
		case 1:
			s.Publish("ch", "", textFrame(fmt.Sprintf("p%d", i)))
		case 2:
			s.SendTo("g1", textFrame(fmt.Sprintf("s%d", i)))
		}
		if i == 50 {
			failing.Close()
		}
		if i == 100 {
			closing.CloseAfterFlush()
		}
	}
	c := balanced(t, s)
	if c.DroppedSlow == 0 || c.DroppedClosed == 0 {
		t.Fatalf("expected drops for the slow and the failed connections: %+v", c)
	}
	var written int64
	for _, r := range good {
		written += int64(len(r.texts(t)))
	}
	if c.Written < written {
		t.Fatalf("the ledger says %d written, the good connections alone got %d", c.Written, written)
	}
}

// TestLedgerShutdownCountsWhatWasDropped: frames still arriving during the
// grace window are dropped for shutdown, once per connection they would have
// reached.
func TestLedgerShutdownCountsWhatWasDropped(t *testing.T) {
	t.Parallel()
	s := New(Config{ShutdownGrace: time.Second, Logger: quietLogger()})
	go s.Run()
	for i := range 3 {
		if err := s.Register(NewConn(fmt.Sprintf("c%d", i), newBlocker())); err != nil {
			t.Fatal(err)
		}
	}
	s.Shutdown()
	for range 10 {
		s.Broadcast(textFrame("late"))
	}
	<-s.Done()
	c := balanced(t, s)
	if c.DroppedShutdown == 0 {
		t.Fatalf("nothing counted as dropped for shutdown: %+v", c)
	}
}

// TestLateCommandsAfterStop: commands posted to a stopped shard, from many
// goroutines, never panic or hang; their frames are released and their
// requests answered.
func TestLateCommandsAfterStop(t *testing.T) {
	t.Parallel()
	s := New(Config{ShutdownGrace: time.Millisecond, InboxSize: 4, Logger: quietLogger()})
	go s.Run()
	conns := make([]*Conn, 50)
	for i := range conns {
		conns[i] = NewConn(fmt.Sprintf("c%d", i), &recorder{})
		if err := s.Register(conns[i]); err != nil {
			t.Fatal(err)
		}
	}
	s.Shutdown()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := textFrame("x") // the test's reference: Send must not keep one
			for range 20 {
				s.Unregister(c)
				s.Broadcast(textFrame("y"))
				_ = c.Send(f)
				c.Close(1000, "")
				_, _ = s.Subscribe(c, "ch")
				_ = s.Stats()
				_ = s.Lookup(c.ID())
			}
			if i == 0 {
				<-s.Done()
			}
			if r := f.Refs(); r != 1 {
				t.Errorf("frame holds %d references, want the test's 1", r)
			}
		}()
	}
	wg.Wait()
	<-s.Done()
	if got := len(s.in); got != 0 {
		t.Fatalf("%d commands left in a stopped shard's inbox", got)
	}
}

// TestBarrier: Barrier returns after the frames posted before it are written
// or queued.
func TestBarrier(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{})
	r := &recorder{}
	if err := s.Register(NewConn("c", r)); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		s.SendTo("c", textFrame(fmt.Sprint(i)))
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	if got := len(r.texts(t)); got != 100 {
		t.Fatalf("%d frames written when Barrier returned, want 100", got)
	}
	s.Shutdown()
	<-s.Done()
	if err := s.Barrier(); err != ErrShutdown {
		t.Fatalf("Barrier on a stopped shard = %v", err)
	}
}

// trickle takes at most chunk bytes per blocking write, slowly, like a client
// that reads steadily but slower than it is sent to.
type trickle struct {
	recorder
	chunk int
	every time.Duration
}

func (t *trickle) TryWrite([][]byte) (int, error) { return 0, nil }

func (t *trickle) Write(bufs [][]byte, deadline time.Time) (int, error) {
	time.Sleep(t.every)
	var part [][]byte
	n := 0
	for _, b := range bufs {
		if n+len(b) > t.chunk {
			b = b[:t.chunk-n]
		}
		part = append(part, b)
		n += len(b)
		if n >= t.chunk {
			break
		}
	}
	return t.recorder.Write(part, deadline)
}

// TestSlowReaderIsNotSilent: a connection whose backlog takes longer than the
// idle timeout to write, but keeps being written, is not closed as silent
// (its pings wait behind the backlog; its writes show it reads).
func TestSlowReaderIsNotSilent(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{IdleTimeout: time.Second, PingInterval: 300 * time.Millisecond,
		Limits: Limits{MaxMessages: 1 << 16, MaxBytes: 1 << 30}})
	tr := &trickle{chunk: 20000, every: 100 * time.Millisecond}
	c := NewConn("slow", tr)
	if err := s.Register(c); err != nil {
		t.Fatal(err)
	}
	c.Touch(time.Now())
	const n = 700 // 700 × 1 KB at 200 KB/s: ~3.5 s, past the idle timeout (seconds granular) twice
	for i := range n {
		s.Broadcast(textFrame(fmt.Sprintf("%04d%s", i, strings.Repeat("x", 1000))))
	}
	waitFor(t, "the backlog written", func() bool { return len(tr.texts(t)) == n })
	if cause := c.Cause(); cause != "" || c.Closed() {
		t.Fatalf("closed (%q) while its backlog was being written", cause)
	}
}
