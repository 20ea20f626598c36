// Package transport is the write side of a connection as the shards see it: a
// non-blocking attempt that the shard goroutine makes for a whole batch of frames,
// and a blocking write that a connection's drain goroutine uses once the socket's
// send buffer is full.
//
// The engine only needs these two operations, which is what lets the benchmarks
// replace sockets with in-memory sinks (see Sink) and measure the engine alone.
package transport

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Transport writes pre-encoded WebSocket frames to one peer.
//
// The engine never calls TryWrite or Write concurrently on one Transport: a single
// goroutine at a time holds a connection's writer role. Close may be called at any
// time, from any goroutine, and more than once.
type Transport interface {
	// TryWrite writes as much of bufs as the peer takes without blocking and returns
	// the number of bytes written. A count short of the total with a nil error means
	// the rest would block. bufs is not modified. It is called on a shard's
	// goroutine, which it must neither block nor crash: unlike Write's, a panic in
	// it is not recovered.
	TryWrite(bufs [][]byte) (int, error)

	// Write writes all of bufs, blocking until done, until deadline passes, or until
	// the transport is closed. bufs is not modified.
	Write(bufs [][]byte, deadline time.Time) (int, error)

	// Close closes the connection at once, unblocking a Write in progress.
	Close() error
}

// HalfCloser is implemented by transports that can shut down their write side
// alone (TCP), so a peer can read a close frame and answer it before the
// connection is torn down.
type HalfCloser interface {
	CloseWrite() error
}

// ErrClosed is returned by a Sink after Close.
var ErrClosed = errors.New("transport: closed")

// Conn adapts any net.Conn. TryWrite never writes (it reports that the write would
// block), so every write goes through the blocking path; TCP connections on Linux
// get the faster transport from New.
type Conn struct {
	c net.Conn
}

// NewConn returns a Transport over c that always writes from the blocking path.
func NewConn(c net.Conn) *Conn { return &Conn{c: c} }

// TryWrite reports that the write would block.
func (t *Conn) TryWrite([][]byte) (int, error) { return 0, nil }

// Write writes bufs with a write deadline.
func (t *Conn) Write(bufs [][]byte, deadline time.Time) (int, error) {
	return blockingWrite(t.c, bufs, deadline)
}

// Close closes the connection.
func (t *Conn) Close() error { return t.c.Close() }

// CloseWrite half-closes the connection when the underlying net.Conn supports it.
func (t *Conn) CloseWrite() error {
	if hc, ok := t.c.(HalfCloser); ok {
		return hc.CloseWrite()
	}
	return t.c.Close()
}

// buffersPool recycles the copies that net.Buffers.WriteTo consumes.
var buffersPool = sync.Pool{New: func() any { b := make(net.Buffers, 0, 16); return &b }}

func blockingWrite(c net.Conn, bufs [][]byte, deadline time.Time) (int, error) {
	if err := c.SetWriteDeadline(deadline); err != nil {
		return 0, err
	}
	p := buffersPool.Get().(*net.Buffers)
	nb := append((*p)[:0], bufs...)
	n, err := nb.WriteTo(c)
	clear((*p)[:cap(*p)])
	*p = (*p)[:0]
	buffersPool.Put(p)
	return int(n), err
}

// Sink is an in-memory transport that accepts every frame at once and only counts
// what it was given. Many connections may share one Sink; its counters are atomic.
// It is the "virtual connection" of the benchmarks.
type Sink struct {
	bytes  atomic.Int64
	writes atomic.Int64
	closed atomic.Int64
}

// TryWrite counts bufs as written.
func (s *Sink) TryWrite(bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	s.bytes.Add(int64(n))
	s.writes.Add(1)
	return n, nil
}

// Write counts bufs as written.
func (s *Sink) Write(bufs [][]byte, _ time.Time) (int, error) { return s.TryWrite(bufs) }

// Close counts a close; a shared Sink stays usable by its other connections.
func (s *Sink) Close() error {
	s.closed.Add(1)
	return nil
}

// Bytes returns the bytes written so far.
func (s *Sink) Bytes() int64 { return s.bytes.Load() }

// Writes returns the number of write calls so far (one per flushed batch).
func (s *Sink) Writes() int64 { return s.writes.Load() }

// Closes returns how many times Close was called.
func (s *Sink) Closes() int64 { return s.closed.Load() }
