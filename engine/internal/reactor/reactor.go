// Package reactor reads many sockets with a few goroutines: each poller owns
// an epoll instance, waits for readiness, reads what a ready socket has into
// the poller's own buffer and hands the bytes to the socket's Handler. An idle
// socket costs a small registration and no goroutine and no buffer, which is
// what lets one process hold a million WebSocket connections (docs/tuning.md).
//
// Sockets stay *net.TCPConn values: reads go through syscall.RawConn.Read, which
// holds the descriptor open for the duration of the read, so a socket closed by
// another goroutine can never be confused with a new one that reused its
// number. Writes do not involve the reactor.
//
// Only the poller that owns a registration calls its Handler, so a Handler
// needs no lock for its read state.
package reactor

import (
	"errors"
	"time"
)

// Action is what a Handler wants after OnData.
type Action uint8

// Actions.
const (
	// Continue reading.
	Continue Action = iota
	// Drain: read and discard whatever still arrives, without calling OnData,
	// until the peer closes or the drain deadline passes (Handler.DrainUntil),
	// then end. It lets a peer that is still sending read the close frame it
	// was sent instead of getting a reset.
	Drain
	// Stop reading and end now.
	Stop
)

// Handler receives a registration's bytes. Its methods run on the poller
// goroutine that owns the registration, one at a time, and must not block for
// long: every socket of that poller waits meanwhile.
type Handler interface {
	// OnData receives bytes read from the socket; b is valid only during the
	// call and may be modified.
	OnData(b []byte) Action
	// DrainUntil is asked once, when OnData returned Drain.
	DrainUntil() time.Time
	// OnEnd is called once when reading ends: err is nil for an orderly end
	// (the peer closed, Stop, a finished drain, Close) and the read error
	// otherwise. The socket is no longer polled; closing it is the caller's
	// business.
	OnEnd(err error)
}

// Errors.
var (
	// ErrClosed is returned by Register and Add after Close.
	ErrClosed = errors.New("reactor: closed")
	// ErrUnsupported is returned by New where there is no epoll.
	ErrUnsupported = errors.New("reactor: not supported on this platform")
)

// Config configures a Reactor.
type Config struct {
	// Pollers is the number of poller goroutines. Zero means GOMAXPROCS.
	Pollers int
	// BufferSize is each poller's read buffer. Zero means 64 KiB.
	BufferSize int
	// OnPanic is told about a panic in a Handler; that registration is ended
	// (OnEnd is not called again). Nil re-panics.
	OnPanic func(v any)
}
