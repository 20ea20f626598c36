//go:build linux

package reactor

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// wakeKey marks the poller's own eventfd in epoll events.
const wakeKey = -1

// drainTick is how often a poller with draining registrations looks at their
// deadlines.
const drainTick = 100 * time.Millisecond

// errHandlerPanic ends a registration whose Handler panicked.
var errHandlerPanic = errors.New("reactor: handler panicked")

// Reactor is a set of pollers. Add spreads registrations over them.
type Reactor struct {
	cfg     Config
	pollers []*poller
	next    atomic.Uint32 // round-robin over pollers
	closed  atomic.Bool
}

// poller is one epoll instance and the goroutine that waits on it.
type poller struct {
	r      *Reactor
	epfd   int
	wakefd int
	buf    []byte
	events []unix.EpollEvent
	done   chan struct{}

	mu    sync.Mutex      // guards the fields below: Register, Registration.Close, Close and Len reach them from other goroutines.
	regs  []*Registration // by slot; nil when free
	gens  []uint32        // generation of each slot, bumped when it is freed
	free  []int32         // free slots
	ended []*Registration // closed from outside, to end on the poller
	quit  bool            // Close was called

	// Owned by the poller goroutine.
	drains []*Registration // registrations draining, with a deadline
}

// Registration is one socket in a poller.
type Registration struct {
	p      *poller
	slot   int32
	gen    uint32
	rc     syscall.RawConn
	h      Handler
	closed atomic.Bool // Close was called, or the poller ended it

	// Owned by the poller goroutine.
	drainUntil int64 // unix nanoseconds; 0 when not draining
	over       bool  // ended: OnEnd was called
}

// New starts the pollers.
func New(cfg Config) (*Reactor, error) {
	if cfg.Pollers <= 0 {
		cfg.Pollers = runtime.GOMAXPROCS(0)
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 64 << 10
	}
	r := &Reactor{cfg: cfg}
	for range cfg.Pollers {
		p, err := newPoller(r)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.pollers = append(r.pollers, p)
		go p.run()
	}
	return r, nil
}

func newPoller(r *Reactor) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeKey}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	return &poller{
		r:      r,
		epfd:   epfd,
		wakefd: wakefd,
		buf:    make([]byte, r.cfg.BufferSize),
		events: make([]unix.EpollEvent, 256),
		done:   make(chan struct{}),
	}, nil
}

// Add starts polling the socket behind rc for h (Register, then Start).
// Bytes that arrive from now on go to h.OnData.
func (r *Reactor) Add(rc syscall.RawConn, h Handler) (*Registration, error) {
	reg, err := r.Register(rc, h)
	if err != nil {
		return nil, err
	}
	if err := reg.Start(); err != nil {
		return nil, err
	}
	return reg, nil
}

// Register prepares a registration for the socket behind rc without polling
// it yet, so the caller can keep it where h will find it; Start begins.
func (r *Reactor) Register(rc syscall.RawConn, h Handler) (*Registration, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	p := r.pollers[r.next.Add(1)%uint32(len(r.pollers))]
	reg := &Registration{p: p, rc: rc, h: h}
	p.mu.Lock()
	if p.quit {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if n := len(p.free); n > 0 {
		reg.slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		reg.slot = int32(len(p.regs))
		p.regs = append(p.regs, nil)
		p.gens = append(p.gens, 0)
	}
	reg.gen = p.gens[reg.slot]
	p.regs[reg.slot] = reg
	p.mu.Unlock()
	return reg, nil
}

// Start polls a registration from Register. On failure the registration is
// released (and never calls its Handler).
func (reg *Registration) Start() error {
	p := reg.p
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: reg.slot, Pad: int32(reg.gen)}
	var addErr error
	if err := reg.rc.Control(func(fd uintptr) {
		addErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	}); err != nil {
		addErr = err
	}
	if addErr != nil {
		reg.closed.Store(true)
		p.mu.Lock()
		p.freeSlotLocked(reg)
		p.mu.Unlock()
		return addErr
	}
	return nil
}

// Close stops polling the registration's socket; OnEnd(nil) follows on the
// poller unless reading had already ended. It does not close the socket; call
// it before closing the socket, from any goroutine, any number of times.
func (reg *Registration) Close() {
	if !reg.closed.CompareAndSwap(false, true) {
		return
	}
	p := reg.p
	_ = reg.rc.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	p.mu.Lock()
	p.ended = append(p.ended, reg)
	p.mu.Unlock()
	p.wake()
}

// Pause stops polling the registration until Resume: its Handler gets
// nothing meanwhile and the socket's bytes wait in the kernel, which pushes
// back on the peer. Call it from any goroutine; Pause and Resume calls must be
// ordered by the caller.
func (reg *Registration) Pause() {
	if reg.closed.Load() {
		return
	}
	p := reg.p
	_ = reg.rc.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// Resume polls a paused registration again.
func (reg *Registration) Resume() {
	if reg.closed.Load() {
		return
	}
	p := reg.p
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: reg.slot, Pad: int32(reg.gen)}
	_ = reg.rc.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
}

func (p *poller) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.wakefd, one[:])
}

// Close ends every registration and stops the pollers. Registrations still
// there get OnEnd(ErrClosed).
func (r *Reactor) Close() {
	if !r.closed.CompareAndSwap(false, true) {
		return
	}
	for _, p := range r.pollers {
		p.mu.Lock()
		p.quit = true
		p.mu.Unlock()
		p.wake()
	}
	for _, p := range r.pollers {
		<-p.done
		unix.Close(p.epfd)
		unix.Close(p.wakefd)
	}
}

// Len returns the registrations being polled.
func (r *Reactor) Len() int {
	n := 0
	for _, p := range r.pollers {
		p.mu.Lock()
		n += len(p.regs) - len(p.free)
		p.mu.Unlock()
	}
	return n
}

// run is the poller loop. Runs in its own goroutine until Close.
func (p *poller) run() {
	defer close(p.done)
	for {
		timeout := -1
		if len(p.drains) > 0 {
			timeout = int(drainTick / time.Millisecond)
		}
		n, err := unix.EpollWait(p.epfd, p.events, timeout)
		if err != nil && err != unix.EINTR {
			// Not expected from a valid epoll descriptor; do not spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for i := range max(n, 0) {
			ev := p.events[i]
			if ev.Fd == wakeKey {
				var b [8]byte
				_, _ = unix.Read(p.wakefd, b[:])
				continue
			}
			if reg := p.lookup(ev.Fd, uint32(ev.Pad)); reg != nil {
				p.service(reg)
			}
		}
		p.mu.Lock()
		ended, quit := p.ended, p.quit
		p.ended = nil
		p.mu.Unlock()
		for _, reg := range ended {
			p.end(reg, nil)
		}
		if len(p.drains) > 0 {
			p.expireDrains(time.Now().UnixNano())
		}
		if quit {
			p.endAll()
			return
		}
	}
}

func (p *poller) lookup(slot int32, gen uint32) *Registration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slot < 0 || int(slot) >= len(p.regs) {
		return nil
	}
	if reg := p.regs[slot]; reg != nil && reg.gen == gen {
		return reg
	}
	return nil
}

// service reads once from a ready socket (level-triggered: whatever is left
// is reported again, which keeps one busy socket from starving the others).
func (p *poller) service(reg *Registration) {
	if reg.over {
		return
	}
	var n int
	var rerr error
	err := reg.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), p.buf)
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil: // the socket was closed on our side
		p.end(reg, nil)
	case rerr == unix.EAGAIN:
	case rerr != nil:
		p.end(reg, rerr)
	case n <= 0:
		p.end(reg, nil) // the peer closed
	case reg.drainUntil != 0:
		// Draining: discard.
	default:
		switch p.onData(reg, p.buf[:n]) {
		case Drain:
			until := p.drainUntil(reg)
			if until == 0 {
				p.end(reg, nil)
				return
			}
			reg.drainUntil = until
			p.drains = append(p.drains, reg)
		case Stop:
			p.end(reg, nil)
		}
	}
}

// onData calls the Handler; a panic ends the registration.
func (p *poller) onData(reg *Registration, b []byte) (act Action) {
	defer func() {
		if v := recover(); v != nil {
			p.panicked(v)
			act = Continue
			p.end(reg, errHandlerPanic)
		}
	}()
	return reg.h.OnData(b)
}

func (p *poller) drainUntil(reg *Registration) (until int64) {
	defer func() {
		if v := recover(); v != nil {
			p.panicked(v)
			until = 0
		}
	}()
	t := reg.h.DrainUntil()
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 1)
}

func (p *poller) panicked(v any) {
	if p.r.cfg.OnPanic == nil {
		panic(v)
	}
	p.r.cfg.OnPanic(v)
}

// end stops polling reg and tells its Handler, once.
func (p *poller) end(reg *Registration, err error) {
	if reg.over {
		return
	}
	reg.over = true
	if reg.closed.CompareAndSwap(false, true) {
		_ = reg.rc.Control(func(fd uintptr) {
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		})
	}
	if reg.drainUntil != 0 {
		reg.drainUntil = 0
		for i, d := range p.drains {
			if d == reg {
				p.drains[i] = p.drains[len(p.drains)-1]
				p.drains[len(p.drains)-1] = nil
				p.drains = p.drains[:len(p.drains)-1]
				break
			}
		}
	}
	p.mu.Lock()
	p.freeSlotLocked(reg)
	p.mu.Unlock()
	defer func() {
		if v := recover(); v != nil {
			p.panicked(v)
		}
	}()
	reg.h.OnEnd(err)
}

func (p *poller) freeSlotLocked(reg *Registration) {
	if p.regs[reg.slot] == reg {
		p.regs[reg.slot] = nil
		p.gens[reg.slot]++
		p.free = append(p.free, reg.slot)
	}
}

// expireDrains ends the registrations whose drain deadline passed.
func (p *poller) expireDrains(now int64) {
	for i := 0; i < len(p.drains); {
		reg := p.drains[i]
		if reg.drainUntil > now {
			i++
			continue
		}
		p.end(reg, nil) // removes it from p.drains
	}
}

// endAll ends every registration at Close.
func (p *poller) endAll() {
	p.mu.Lock()
	regs := make([]*Registration, 0, len(p.regs))
	for _, reg := range p.regs {
		if reg != nil {
			regs = append(regs, reg)
		}
	}
	p.mu.Unlock()
	for _, reg := range regs {
		p.end(reg, ErrClosed)
	}
}
