//go:build linux

package reactor

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rec is a Handler that records what it is given.
type rec struct {
	mu      sync.Mutex
	data    bytes.Buffer
	ends    int
	endErr  error
	act     func(b []byte) Action
	drain   time.Duration
	ended   chan struct{}
	onDataN atomic.Int64
}

func newRec() *rec { return &rec{ended: make(chan struct{})} }

func (r *rec) OnData(b []byte) Action {
	r.onDataN.Add(1)
	r.mu.Lock()
	r.data.Write(b)
	r.mu.Unlock()
	if r.act != nil {
		return r.act(b)
	}
	return Continue
}

func (r *rec) DrainUntil() time.Time { return time.Now().Add(r.drain) }

func (r *rec) OnEnd(err error) {
	r.mu.Lock()
	r.ends++
	r.endErr = err
	n := r.ends
	r.mu.Unlock()
	if n == 1 {
		close(r.ended)
	}
}

func (r *rec) got() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.data.String()
}

func (r *rec) waitEnd(t *testing.T) error {
	t.Helper()
	select {
	case <-r.ended:
	case <-time.After(30 * time.Second):
		t.Fatal("OnEnd not called")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.endErr
}

// pair returns a connected loopback pair: the server end (polled) and the
// client end.
func pair(t *testing.T, ln net.Listener) (*net.TCPConn, net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { cl.Close(); srv.Close() })
	return srv.(*net.TCPConn), cl
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func start(t *testing.T, cfg Config) *Reactor {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func add(t *testing.T, r *Reactor, c *net.TCPConn, h Handler) *Registration {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := r.Add(rc, h)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestReadsUntilThePeerCloses(t *testing.T) {
	t.Parallel()
	r := start(t, Config{Pollers: 2, BufferSize: 16})
	srv, cl := pair(t, listen(t))
	h := newRec()
	add(t, r, srv, h)
	msg := "hello, reactor: more than one buffer of bytes"
	if _, err := cl.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all bytes", func() bool { return h.got() == msg })
	cl.Close()
	if err := h.waitEnd(t); err != nil {
		t.Fatalf("OnEnd(%v), want nil for a peer that closed", err)
	}
	waitFor(t, "the registration to go", func() bool { return r.Len() == 0 })
}

func TestCloseEndsOnce(t *testing.T) {
	t.Parallel()
	r := start(t, Config{Pollers: 1})
	srv, cl := pair(t, listen(t))
	h := newRec()
	reg := add(t, r, srv, h)
	for range 3 {
		reg.Close()
	}
	if err := h.waitEnd(t); err != nil {
		t.Fatal(err)
	}
	_, _ = cl.Write([]byte("late"))
	time.Sleep(100 * time.Millisecond)
	if h.got() != "" || h.ends != 1 {
		t.Fatalf("after Close: data %q, %d ends", h.got(), h.ends)
	}
}

func TestStopAndDrain(t *testing.T) {
	t.Parallel()
	r := start(t, Config{Pollers: 1})
	ln := listen(t)

	srv, cl := pair(t, ln)
	stop := newRec()
	stop.act = func([]byte) Action { return Stop }
	add(t, r, srv, stop)
	_, _ = cl.Write([]byte("x"))
	if err := stop.waitEnd(t); err != nil {
		t.Fatal(err)
	}

	srv2, cl2 := pair(t, ln)
	drain := newRec()
	drain.drain = 300 * time.Millisecond
	drain.act = func([]byte) Action { return Drain }
	add(t, r, srv2, drain)
	_, _ = cl2.Write([]byte("first"))
	waitFor(t, "the first bytes", func() bool { return drain.got() == "first" })
	_, _ = cl2.Write([]byte("discarded"))
	if err := drain.waitEnd(t); err != nil { // by the deadline: the client never closes
		t.Fatal(err)
	}
	if n := drain.onDataN.Load(); n != 1 {
		t.Fatalf("OnData called %d times: a draining registration's bytes must be discarded", n)
	}
}

func TestHandlerPanicEndsOnlyThatRegistration(t *testing.T) {
	t.Parallel()
	var panics atomic.Int64
	r := start(t, Config{Pollers: 1, OnPanic: func(any) { panics.Add(1) }})
	ln := listen(t)
	srv, cl := pair(t, ln)
	bad := newRec()
	bad.act = func([]byte) Action { panic("handler bug") }
	add(t, r, srv, bad)
	srv2, cl2 := pair(t, ln)
	good := newRec()
	add(t, r, srv2, good)
	_, _ = cl.Write([]byte("boom"))
	if err := bad.waitEnd(t); !errors.Is(err, errHandlerPanic) {
		t.Fatalf("OnEnd(%v), want the panic error", err)
	}
	_, _ = cl2.Write([]byte("fine"))
	waitFor(t, "the other registration", func() bool { return good.got() == "fine" })
	if panics.Load() != 1 {
		t.Fatalf("%d panics reported", panics.Load())
	}
}

// TestManySocketsNoCrossTalk: hundreds of sockets opened and closed while
// others write; every handler sees exactly its own bytes, although
// descriptors (and registration slots) are reused all along.
func TestManySocketsNoCrossTalk(t *testing.T) {
	t.Parallel()
	r := start(t, Config{Pollers: 3})
	ln := listen(t)
	type entry struct {
		h      *rec
		cl     net.Conn
		reg    *Registration
		tag    string
		writes int
	}
	var live []entry
	for round := range 6 {
		for i := range 60 {
			srv, cl := pair(t, ln)
			h := newRec()
			live = append(live, entry{h: h, cl: cl, reg: add(t, r, srv, h), tag: fmt.Sprintf("<%d.%d>", round, i)})
		}
		for i := range live {
			if _, err := live[i].cl.Write([]byte(live[i].tag)); err != nil {
				t.Fatal(err)
			}
			live[i].writes++
		}
		// Close a third: from our side (Close) or the peer's.
		var keep []entry
		for i, en := range live {
			switch i % 3 {
			case 0:
				en.reg.Close()
			case 1:
				en.cl.Close()
			default:
				keep = append(keep, en)
				continue
			}
			if err := en.h.waitEnd(t); err != nil {
				t.Fatal(err)
			}
		}
		live = keep
	}
	for _, en := range live {
		want := strings.Repeat(en.tag, en.writes)
		waitFor(t, "every tag", func() bool { return len(en.h.got()) >= len(want) })
		if got := en.h.got(); got != want {
			t.Fatalf("handler for %s got %q, want %q", en.tag, got, want)
		}
	}
}

func TestCloseReactorEndsTheRest(t *testing.T) {
	t.Parallel()
	r, err := New(Config{Pollers: 2})
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := pair(t, listen(t))
	h := newRec()
	add(t, r, srv, h)
	r.Close()
	if err := h.waitEnd(t); !errors.Is(err, ErrClosed) {
		t.Fatalf("OnEnd(%v), want ErrClosed", err)
	}
	if _, err := r.Add(nil, h); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
}
