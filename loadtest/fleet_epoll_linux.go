//go:build linux

package loadtest

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultIO is the I/O model that Config.IO's zero value means: epoll on
// Linux, where a held connection costs a fraction of the memory of a
// goroutine and a buffer and no more CPU per delivery (docs/benchmarks.md,
// "Load generator").
const DefaultIO = IOEpoll

// epollSupported says whether IOEpoll works on this system.
const epollSupported = true

// Sizes of an epoll loop.
const (
	// epollReadBuffer is each loop's read buffer, shared by every connection
	// it holds: one read takes up to this much of a socket's backlog.
	epollReadBuffer = 64 << 10
	// epollEvents is how many readiness events one epoll_wait returns at most.
	epollEvents = 256
	// epollReadsPerEvent bounds the reads of one connection per event, so a
	// busy socket does not starve the others of the loop (level-triggered:
	// what is left is reported again).
	epollReadsPerEvent = 8
	// maxPendingOut bounds the frames (pongs, a close echo) a connection
	// queues while the server does not read them; past it the connection is
	// dropped (errWriteBlocked).
	maxPendingOut = 64 << 10
)

// wakeSlot marks the event of a loop's eventfd, which asks it to stop.
const wakeSlot = -1

// epollConn is what an epoll loop keeps of a connection it holds: the socket
// and the incremental frame reader, no goroutine and, while idle, no buffer.
// Owned by the connection's loop (before that, by its dial goroutine).
type epollConn struct {
	fd    int32 // the socket; -1 when closed
	slot  int32 // the connection's index in the fleet: its pollers slot
	armed bool  // the socket is registered for EPOLLOUT, to flush out
	r     frameReader
	out   []byte // frame bytes the socket did not take yet; nil when none
}

// pollers are the epoll loops of a localFleet: a few goroutines, each
// blocking in epoll_wait on its own epoll instance, read every connection the
// fleet holds (the level-triggered readiness of each socket), parse its frames
// in the loop's buffer and count them. Connection i of the fleet lives in
// slots[i] and belongs to loop i % len(loops) from its hand-over (hold) until
// the loop closes it or stop does.
type pollers struct {
	f       *localFleet
	slots   []atomic.Pointer[client] // written by hold and release, read by the loops
	loops   []*poller
	wg      sync.WaitGroup // the loop goroutines
	started bool           // start succeeded; read by stop, in the same goroutine
}

// poller is one epoll loop.
type poller struct {
	ps   *pollers
	epfd int
	wake int    // eventfd that asks the loop to stop
	buf  []byte // the read buffer, loop-owned
}

func newPollers(f *localFleet, count int) (*pollers, error) {
	n := max(min(runtime.GOMAXPROCS(0), count), 1)
	ps := &pollers{f: f, slots: make([]atomic.Pointer[client], count)}
	for range n {
		ps.loops = append(ps.loops, &poller{ps: ps, epfd: -1, wake: -1})
	}
	return ps, nil
}

// start creates the epoll instances and starts their loops.
func (ps *pollers) start() error {
	for _, p := range ps.loops {
		var err error
		if p.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
			ps.closeFDs()
			return fmt.Errorf("loadtest: epoll_create: %w", err)
		}
		if p.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			ps.closeFDs()
			return fmt.Errorf("loadtest: eventfd: %w", err)
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Pad: wakeSlot}
		if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, p.wake, &ev); err != nil {
			ps.closeFDs()
			return fmt.Errorf("loadtest: epoll_ctl: %w", err)
		}
		p.buf = make([]byte, epollReadBuffer)
	}
	ps.started = true
	for _, p := range ps.loops {
		ps.wg.Add(1)
		go p.run()
	}
	return nil
}

// hold takes connection i of the fleet, c, from the goroutine that dialled
// it: the socket leaves the runtime's poller for an epoll loop, and the
// handshake's buffered reader (with whatever the server sent right after the
// handshake, parsed here first) is dropped. Called once per connection, by its
// dial goroutine, before the dial counts as finished.
func (ps *pollers) hold(c *client, i int) {
	fd, err := detach(c.ws)
	if err != nil {
		c.ended(err)
		c.ws.close()
		return
	}
	early, _ := c.ws.br.Peek(c.ws.br.Buffered())
	c.ep = epollConn{fd: int32(fd), slot: int32(i)}
	err = c.ep.r.consume(early, c, nowNanos(), epollReadBuffer) // early lies in the handshake reader's buffer, used by nothing else
	_ = c.ws.close()
	c.ws = nil
	if err != nil {
		c.ended(err)
		ps.release(c)
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Pad: int32(i)}
	if len(c.ep.out) > 0 { // pongs owed for what came with the handshake
		ev.Events |= unix.EPOLLOUT
		c.ep.armed = true
	}
	// From here on c is the loop's: the slot is filled before the socket is
	// registered, so that the loop finds it, and c is touched again only if
	// the registration failed, when no event can bring the loop to it.
	ps.slots[i].Store(c)
	if err := unix.EpollCtl(ps.loops[i%len(ps.loops)].epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		ps.slots[i].Store(nil)
		c.ended(fmt.Errorf("epoll_ctl: %w", err))
		ps.release(c)
	}
}

// detach returns a descriptor of ws's socket that is the caller's alone, in
// non-blocking mode (its file status is the one the runtime set), and leaves
// ws to be closed, which takes the original out of the runtime's poller.
func detach(ws *wsConn) (int, error) {
	sc, ok := ws.nc.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("epoll: %T has no descriptor", ws.nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return fd, nil
}

// release closes a connection that its loop (or stop) let go; the caller has
// counted it (client.ended).
func (ps *pollers) release(c *client) {
	ps.slots[c.ep.slot].CompareAndSwap(c, nil)
	if c.ep.fd >= 0 {
		_ = unix.Close(int(c.ep.fd)) // also leaves the epoll set: the descriptor was the only one
		c.ep.fd = -1
	}
	c.ep.r.release()
	c.ep.out = nil
}

// stop ends every loop, then closes every connection still held. Called once
// the dials have finished, by the goroutine that called start.
func (ps *pollers) stop() {
	if !ps.started {
		return
	}
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0} // adds a non-zero 8-byte count to the eventfd, whatever the byte order
	for _, p := range ps.loops {
		_, _ = unix.Write(p.wake, one)
	}
	ps.wg.Wait()
	for i := range ps.slots {
		if c := ps.slots[i].Load(); c != nil {
			c.ended(errFleetStopped)
			ps.release(c)
		}
	}
	ps.closeFDs()
	ps.started = false
}

// errFleetStopped ends the connections still held when a fleet stops; it is
// not counted (the fleet is stopping).
var errFleetStopped = errors.New("the fleet stopped")

func (ps *pollers) closeFDs() {
	for _, p := range ps.loops {
		if p.epfd >= 0 {
			_ = unix.Close(p.epfd)
			p.epfd = -1
		}
		if p.wake >= 0 {
			_ = unix.Close(p.wake)
			p.wake = -1
		}
	}
}

// run waits for readiness and serves it until stop wakes it. Runs in its own
// goroutine, most of the time blocked in epoll_wait (a system call: the
// runtime hands its P to other goroutines meanwhile).
func (p *poller) run() {
	defer p.ps.wg.Done()
	events := make([]unix.EpollEvent, epollEvents)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Cannot happen with a valid epoll descriptor; the connections
			// stay open, unread, until stop, and their loss shows in the run.
			p.ps.f.countErr("epoll_wait")
			p.ps.f.cfg.Logger.Error("loadtest: epoll_wait failed; this loop's connections are no longer read", "err", err)
			return
		}
		for i := range events[:n] {
			ev := &events[i]
			if ev.Pad == wakeSlot {
				return
			}
			c := p.ps.slots[ev.Pad].Load()
			if c == nil {
				continue // let go earlier in this batch
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				if err := p.flush(c); err != nil {
					p.drop(c, err)
					continue
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.readable(c)
			}
		}
	}
}

// readable reads c until its socket is drained (or epollReadsPerEvent reads),
// delivering every complete message.
func (p *poller) readable(c *client) {
	for range epollReadsPerEvent {
		more, err := c.ep.r.readOnce(c, p.buf)
		if err == nil && len(c.ep.out) > 0 && !c.ep.armed {
			err = p.arm(c, true)
		}
		if err != nil {
			p.drop(c, err)
			return
		}
		if !more {
			return
		}
	}
}

// drop lets c go after its reads ended with err.
func (p *poller) drop(c *client, err error) {
	c.ended(err)
	p.ps.release(c)
}

// arm registers c's socket for EPOLLOUT (on) or for reads only.
func (p *poller) arm(c *client, on bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Pad: c.ep.slot}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(c.ep.fd), &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	c.ep.armed = on
	return nil
}

// flush writes what c's socket did not take before.
func (p *poller) flush(c *client) error {
	if len(c.ep.out) > 0 {
		n, err := unix.Write(int(c.ep.fd), c.ep.out)
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			return err
		}
		c.ep.out = c.ep.out[max(n, 0):]
	}
	if len(c.ep.out) > 0 {
		return nil
	}
	c.ep.out = nil
	return p.arm(c, false)
}

// read reads what c's socket holds into b: (0, nil) when it holds nothing
// now, (0, io.EOF) once the server closed it. Part of frameConn.
func (c *client) read(b []byte) (int, error) {
	n, err := unix.Read(int(c.ep.fd), b)
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		return 0, nil
	case err != nil:
		return 0, err
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// message counts one data message. Part of frameConn.
func (c *client) message(p []byte, now int64) { c.received(p, now) }

// writeFrame sends one masked control frame (a pong, the close echo) on c's
// socket without blocking: what the socket does not take now waits in c's
// out queue for EPOLLOUT, behind which later frames queue too. Part of
// frameConn.
func (c *client) writeFrame(op byte, p []byte) error {
	var tmp [maxHeader + 125]byte // control frames carry at most 125 bytes (decodeHeader)
	b := appendClientFrame(tmp[:0], op, p)
	if len(c.ep.out) == 0 {
		n, err := unix.Write(int(c.ep.fd), b)
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			return err
		}
		b = b[max(n, 0):]
	}
	if len(b) == 0 {
		return nil
	}
	if len(c.ep.out)+len(b) > maxPendingOut {
		return errWriteBlocked
	}
	c.ep.out = append(c.ep.out, b...) // the loop registers for EPOLLOUT once the read is done
	return nil
}
