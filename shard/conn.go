package shard

import (
	"time"

	"sync"

	"github.com/shardhub/shardhub/engine/frame"
	"github.com/shardhub/shardhub/engine/transport"
)

// Conn states, in the only order they move.
const (
	stateOpen    uint8 = iota
	stateClosing       // no new frames; close the transport once the queue drains
	stateClosed        // transport closed (or closing), queue released
)

// Limits bound a connection's outbound queue and its blocking writes.
type Limits struct {
	// MaxMessages is the most frames that may wait in one connection's queue.
	MaxMessages int
	// MaxBytes is the most bytes that may wait in one connection's queue.
	MaxBytes int
	// WriteTimeout bounds one blocking write of a drain goroutine.
	WriteTimeout time.Duration
}

// DefaultLimits are used by a Conn that is not registered with a shard.
var DefaultLimits = Limits{MaxMessages: 1024, MaxBytes: 4 << 20, WriteTimeout: 10 * time.Second}

// Conn is the write side of one connection: a bounded queue of shared frames, and
// the rule that whoever holds the writer role writes everything pending in one call.
//
// Writes take the fast path when nothing is queued: the writing goroutine (usually
// the shard's) makes one non-blocking TryWrite for the whole batch while holding mu.
// What the socket does not take is queued, and a drain goroutine, started for that
// connection only, writes it with blocking writes; it exits as soon as the queue is
// empty, so an idle connection has no writer goroutine. Writes never block the
// caller: one that would overflow the queue evicts the connection instead.
//
// All methods are safe for concurrent use.
type Conn struct {
	id string
	t  transport.Transport

	mu       sync.Mutex     // guards the outbound queue, the writer role and the state (fields to the blank line).
	queue    []*frame.Frame // frames not yet fully written, oldest first; each holds one reference
	off      int            // bytes of queue[0] already written
	queued   int            // bytes waiting in queue, excluding off
	writing  bool           // a drain goroutine holds the writer role
	state    uint8          // stateOpen, stateClosing or stateClosed
	evicted  bool           // closed because the queue overflowed
	tclosed  bool           // t.Close has been called
	detached bool           // the shard has been asked to drop this connection

	// Owned by the shard goroutine.
	shard *Shard
	slot  int32    // index in shard.list, -1 when not registered
	dirty bool     // in shard.dirty during a batch
	subs  []subRef // channels this connection subscribes to

	// Value is the embedder's per-connection value. Set it before Register; it is
	// read-only afterwards.
	Value any
}

// NewConn returns a connection with the given id writing to t.
func NewConn(id string, t transport.Transport) *Conn {
	return &Conn{id: id, t: t, slot: -1}
}

// ID returns the connection id.
func (c *Conn) ID() string { return c.id }

// Evicted reports whether the connection was closed as a slow consumer.
func (c *Conn) Evicted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evicted
}

// Closed reports whether the send side is closing or closed.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state != stateOpen
}

// Queued returns the frames and bytes waiting in the outbound queue.
func (c *Conn) Queued() (frames, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue), c.queued
}

func (c *Conn) limits() *Limits {
	if c.shard != nil {
		return &c.shard.cfg.Limits
	}
	return &DefaultLimits
}

// Send writes f to the connection, queueing what cannot be written now. The caller
// keeps its own reference to f. It returns ErrConnClosed when the send side is
// closed and ErrQueueFull when f would overflow the queue (the connection is then
// evicted).
func (c *Conn) Send(f *frame.Frame) error { return c.send(f, true) }

// send writes f; countAsDelivery is false for protocol frames (handshake, pongs,
// close frames), which are not messages.
func (c *Conn) send(f *frame.Frame, countAsDelivery bool) error {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return ErrConnClosed
	}
	var err error
	if !c.writing && len(c.queue) == 0 {
		b := f.Bytes()
		one := [1][]byte{b}
		var n int
		if n, err = c.t.TryWrite(one[:]); err == nil {
			c.countBytes(n)
			if n < len(b) {
				f.Retain(1)
				c.queue = append(c.queue, f)
				c.off, c.queued = n, len(b)-n
				c.startDrainLocked()
			}
		} else {
			c.failLocked()
		}
	} else {
		err = c.enqueueLocked(f)
	}
	c.mu.Unlock()
	if err == nil && countAsDelivery {
		c.countDeliveries(1)
	}
	c.afterError(err)
	return err
}

// WriteRaw copies b, one or more complete encoded frames, and writes it like Send.
// It is how frames built by the WebSocket library (pongs, close frames) join the
// same ordered stream as the engine's frames.
func (c *Conn) WriteRaw(b []byte) error {
	f := frame.Copy(b)
	err := c.send(f, false)
	f.Release()
	return err
}

// enqueueLocked appends f to the queue, evicting the connection on overflow.
func (c *Conn) enqueueLocked(f *frame.Frame) error {
	lim := c.limits()
	if len(c.queue)+1 > lim.MaxMessages || c.queued+f.Len() > lim.MaxBytes {
		c.evictLocked()
		return ErrQueueFull
	}
	f.Retain(1)
	c.queue = append(c.queue, f)
	c.queued += f.Len()
	return nil
}

// writeBatch is the shard's fast path: frames, whose encoded bytes are bufs (total
// bytes long), go out in one non-blocking write when the queue is empty and are
// queued otherwise. It returns whether the connection took the frames and the bytes
// written now.
func (c *Conn) writeBatch(frames []*frame.Frame, bufs [][]byte, total int) (ok bool, written int) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false, 0
	}
	if c.writing || len(c.queue) > 0 {
		for _, f := range frames {
			if err := c.enqueueLocked(f); err != nil {
				c.mu.Unlock()
				c.afterError(err)
				return false, 0
			}
		}
		c.mu.Unlock()
		return true, 0
	}
	n, err := c.t.TryWrite(bufs)
	if err != nil {
		c.failLocked()
		c.mu.Unlock()
		c.afterError(err)
		return false, 0
	}
	if n < total {
		// Queue what the socket did not take, starting with the frame it stopped in.
		skip := n
		for _, f := range frames {
			l := f.Len()
			if skip >= l {
				skip -= l
				continue
			}
			f.Retain(1)
			c.queue = append(c.queue, f)
			c.queued += l
		}
		c.off = skip
		c.queued -= skip
		if lim := c.limits(); len(c.queue) > lim.MaxMessages || c.queued > lim.MaxBytes {
			c.evictLocked()
			c.mu.Unlock()
			c.afterError(ErrQueueFull)
			return false, n
		}
		c.startDrainLocked()
	}
	c.mu.Unlock()
	return true, n
}

// flushQueued writes everything queued in one non-blocking call and returns the
// bytes written. The shard calls it for the connections it queued frames on during
// a batch; scratch is its reusable buffer list.
func (c *Conn) flushQueued(scratch *[][]byte) int {
	c.mu.Lock()
	if c.writing || len(c.queue) == 0 || c.state == stateClosed {
		c.mu.Unlock()
		return 0
	}
	bufs := c.appendQueuedLocked((*scratch)[:0])
	n, err := c.t.TryWrite(bufs)
	clear(bufs)
	*scratch = bufs[:0]
	if err != nil {
		c.failLocked()
		c.mu.Unlock()
		c.afterError(err)
		return 0
	}
	c.consumeLocked(n)
	if len(c.queue) > 0 {
		c.startDrainLocked()
	} else if c.state == stateClosing {
		c.finishLocked()
	}
	c.mu.Unlock()
	return n
}

// appendQueuedLocked appends the unwritten bytes of the queue to dst.
func (c *Conn) appendQueuedLocked(dst [][]byte) [][]byte {
	for i, f := range c.queue {
		b := f.Bytes()
		if i == 0 {
			b = b[c.off:]
		}
		dst = append(dst, b)
	}
	return dst
}

// consumeLocked drops n written bytes from the front of the queue, releasing the
// frames that are done.
func (c *Conn) consumeLocked(n int) {
	done := 0
	for _, f := range c.queue {
		rest := f.Len() - c.off
		if n < rest {
			c.off += n
			c.queued -= n
			break
		}
		n -= rest
		c.queued -= rest
		c.off = 0
		f.Release()
		done++
	}
	clear(c.queue[:done])
	c.queue = c.queue[done:]
	if len(c.queue) == 0 {
		c.queue = nil // a backlog is over: do not pin its backing array while idle
	}
}

func (c *Conn) countDeliveries(n int) {
	if s := c.shard; s != nil {
		s.stats.deliveries.Add(int64(n))
	}
}

func (c *Conn) countBytes(n int) {
	if s := c.shard; s != nil && n > 0 {
		s.stats.bytes.Add(int64(n))
	}
}

func (c *Conn) startDrainLocked() {
	if !c.writing {
		c.writing = true
		go c.drain(c.t)
	}
}

// drain writes the queue with blocking writes until it is empty.
// Runs in its own goroutine, one per connection with a backlog; it exits as soon as
// the backlog is gone, or the connection is closed.
func (c *Conn) drain(t transport.Transport) {
	var bufs [][]byte
	for {
		c.mu.Lock()
		if c.state == stateClosed {
			c.releaseQueueLocked()
			c.writing = false
			c.mu.Unlock()
			return
		}
		if len(c.queue) == 0 {
			c.writing = false
			if c.state == stateClosing {
				c.finishLocked()
			}
			c.mu.Unlock()
			return
		}
		bufs = c.appendQueuedLocked(bufs[:0])
		timeout := c.limits().WriteTimeout
		c.mu.Unlock()

		n, err := t.Write(bufs, time.Now().Add(timeout))
		clear(bufs)
		c.countBytes(n)

		c.mu.Lock()
		c.consumeLocked(n)
		failed := err != nil && c.state != stateClosed
		if failed {
			c.failLocked()
		}
		c.mu.Unlock()
		if failed {
			c.afterError(err)
		}
	}
}

// failLocked closes the send side after a write error.
func (c *Conn) failLocked() {
	c.state = stateClosed
	if !c.writing {
		c.releaseQueueLocked()
	}
	c.closeTransportLocked()
}

// evictLocked force-disconnects a slow consumer. When no write is in flight the
// peer gets close 1013 (try again later) if its socket takes it; then the
// connection is closed at once, which also unblocks a drain goroutine stuck in a
// write.
func (c *Conn) evictLocked() {
	c.evicted = true
	c.state = stateClosed
	if !c.writing {
		midFrame := c.off > 0
		c.releaseQueueLocked()
		if !midFrame {
			one := [1][]byte{slowConsumerClose.Bytes()}
			_, _ = c.t.TryWrite(one[:])
		}
	}
	c.closeTransportLocked()
}

// CloseSlowConsumer is the close code sent to an evicted slow consumer.
const CloseSlowConsumer = 1013

var slowConsumerClose = frame.Close(CloseSlowConsumer, "slow consumer: outbound queue full")

// afterError reports a failed or evicted connection to its shard, which counts,
// logs and unregisters it. c.mu must not be held.
func (c *Conn) afterError(err error) {
	if err == nil || err == ErrConnClosed {
		return
	}
	c.mu.Lock()
	first := !c.detached
	c.detached = true
	c.mu.Unlock()
	if s := c.shard; s != nil && first {
		s.lost(c, err)
	}
}

func (c *Conn) releaseQueueLocked() {
	for _, f := range c.queue {
		f.Release()
	}
	clear(c.queue)
	c.queue = nil
	c.off, c.queued = 0, 0
}

// closeTransportLocked closes the transport the first time it is called.
func (c *Conn) closeTransportLocked() {
	if !c.tclosed {
		c.tclosed = true
		_ = c.t.Close()
	}
}

// finishLocked ends a graceful close once the queue has drained. A transport that
// can half-close sends FIN and keeps its read side open for a short linger, so the
// peer reads the close frame and answers it instead of being reset; the read side
// (or the linger timer) then closes it fully through Abort.
func (c *Conn) finishLocked() {
	c.state = stateClosed
	if hc, ok := c.t.(transport.HalfCloser); ok && !c.tclosed {
		if hc.CloseWrite() == nil {
			time.AfterFunc(closeLinger, c.Abort)
			return
		}
	}
	c.closeTransportLocked()
}

// closeLinger is how long a half-closed connection waits for the peer's close.
const closeLinger = 2 * time.Second

// CloseAfterFlush stops accepting frames and closes the transport once what is
// queued has been written (each write bounded by the write timeout).
func (c *Conn) CloseAfterFlush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return
	}
	c.state = stateClosing
	if !c.writing && len(c.queue) == 0 {
		c.finishLocked()
	}
	// Otherwise the shard's flush or the drain goroutine closes it when done.
}

// Close sends a close frame with code and reason after what is queued, then closes
// the connection.
func (c *Conn) Close(code uint16, reason string) {
	f := frame.Close(code, reason)
	_ = c.send(f, false)
	f.Release()
	c.CloseAfterFlush()
}

// Abort closes the connection now, dropping whatever is queued. It is idempotent;
// only the first call closes the transport.
func (c *Conn) Abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		c.closeTransportLocked()
		return
	}
	c.state = stateClosed
	if !c.writing {
		c.releaseQueueLocked()
	}
	c.closeTransportLocked()
}

// enqueue queues f for the shard's flush at the end of a batch.
func (c *Conn) enqueue(f *frame.Frame) bool {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	err := c.enqueueLocked(f)
	c.mu.Unlock()
	if err != nil {
		c.afterError(err)
		return false
	}
	return true
}

// Init prepares a Conn embedded in another struct, as NewConn does for a new one.
// It must be called once, before the connection is used.
func (c *Conn) Init(id string, t transport.Transport) {
	c.id, c.t, c.slot = id, t, -1
}
