//go:build linux

package transport

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// iovMax is the kernel's limit on buffers per writev call (UIO_MAXIOV).
const iovMax = 1024

// TCP writes to a TCP socket with writev(2): TryWrite makes one non-blocking attempt
// for the whole batch, so all frames pending for a socket leave in one system call.
type TCP struct {
	c           *net.TCPConn
	raw         syscall.RawConn
	beforeClose atomic.Pointer[func()] // called by Close before the socket closes
}

// New returns the fastest Transport for c: TCP for a *net.TCPConn, Conn otherwise.
func New(c net.Conn) Transport {
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			return &TCP{c: tc, raw: raw}
		}
	}
	return NewConn(c)
}

// writev carries one TryWrite call into the RawConn callback. Calls are pooled so
// the callback closure is built once per pooled value, not once per write.
type writev struct {
	bufs [][]byte
	iov  []unix.Iovec
	n    int
	err  error
	fn   func(fd uintptr) bool
}

var writevPool = sync.Pool{New: func() any {
	w := &writev{iov: make([]unix.Iovec, 0, 64)}
	w.fn = w.do
	return w
}}

// do runs inside RawConn.Write, which holds the descriptor open. It always
// returns true: on EAGAIN the caller learns the short count and hands the rest
// to the blocking path instead of parking here.
func (w *writev) do(fd uintptr) bool {
	bufs := w.bufs
	for len(bufs) > 0 {
		w.iov = w.iov[:0]
		want, used := 0, 0
		for _, b := range bufs {
			if len(w.iov) == iovMax {
				break
			}
			used++
			if len(b) == 0 {
				continue
			}
			var v unix.Iovec
			v.Base = &b[0]
			v.SetLen(len(b))
			w.iov = append(w.iov, v)
			want += len(b)
		}
		bufs = bufs[used:]
		if want == 0 {
			continue
		}
		n, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
		switch errno {
		case 0:
		case unix.EINTR:
			bufs = nil // report what was written; the caller retries from the blocking path
			continue
		case unix.EAGAIN:
			return true
		default:
			w.err = errno
			return true
		}
		w.n += int(n)
		if int(n) < want {
			return true
		}
	}
	return true
}

// TryWrite writes what the socket's send buffer takes now.
func (t *TCP) TryWrite(bufs [][]byte) (int, error) {
	w := writevPool.Get().(*writev)
	w.bufs, w.n, w.err = bufs, 0, nil
	err := t.raw.Write(w.fn)
	n := w.n
	if err == nil {
		err = w.err
	}
	clear(w.iov[:cap(w.iov)])
	w.bufs = nil
	writevPool.Put(w)
	return n, err
}

// Write writes all of bufs, waiting for the socket as needed.
func (t *TCP) Write(bufs [][]byte, deadline time.Time) (int, error) {
	return blockingWrite(t.c, bufs, deadline)
}

// Close closes the socket, after the function given to BeforeClose.
func (t *TCP) Close() error {
	if f := t.beforeClose.Load(); f != nil {
		(*f)()
	}
	return t.c.Close()
}

// BeforeClose sets a function Close calls before it closes the socket: the
// engine's reactor stops polling a socket before its descriptor can be reused.
// It may be set once the transport is shared; Close may then run it more than
// once.
func (t *TCP) BeforeClose(f func()) { t.beforeClose.Store(&f) }

// RawConn returns the socket's raw connection (for readiness polling).
func (t *TCP) RawConn() syscall.RawConn { return t.raw }

// CloseWrite sends FIN, keeping the read side open.
func (t *TCP) CloseWrite() error { return t.c.CloseWrite() }
