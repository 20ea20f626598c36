package shard

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardhub/shardhub/shard/frame"
	"github.com/shardhub/shardhub/shard/transport"
)

// Conn state bits (Conn.st). Zero means open, with the shard as the only writer.
const (
	stQueued  uint32 = 1 << iota // a drain goroutine owns writing; others append to the queue under mu
	stClosing                    // no new frames; close once the queue has been written
	stClosed                     // send side closed
)

// Limits bound a connection's outbound queue and its blocking writes.
type Limits struct {
	// MaxMessages is the most frames that may wait in one connection's queue.
	// Zero means DefaultMaxMessages.
	MaxMessages int
	// MaxBytes is the most bytes that may wait in one connection's queue.
	// Zero means DefaultMaxBytes; more than MaxQueueBytes means MaxQueueBytes.
	MaxBytes int
	// WriteTimeout bounds one blocking write of a drain goroutine. Zero means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxMessages <= 0 {
		l.MaxMessages = DefaultMaxMessages
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	l.MaxBytes = min(l.MaxBytes, MaxQueueBytes)
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultWriteTimeout
	}
	return l
}

// unregisteredLimits bound a Conn that has no shard.
var unregisteredLimits = Limits{}.withDefaults()

// Conn is the write side of one connection.
//
// While registered, the connection's shard is its only writer: frames from other
// goroutines (replies, pongs, close frames, private messages) are posted to the
// shard's inbox, in order, and the shard writes everything a connection has in a
// batch with one non-blocking TryWrite. That fast path takes no lock and no atomic
// read-modify-write: one atomic load of the state word, then the write. What the
// socket does not take is queued under mu and a drain goroutine, started for that
// connection only, writes it with blocking writes; until the queue is empty the
// shard appends to the queue instead of writing, and the drain goroutine exits as
// soon as it is done, so an idle connection has no writer goroutine. A queue past
// its Limits evicts the connection: writes never block the shard.
//
// Before registration (and for a Conn never registered) writes are made directly
// under mu by the calling goroutine.
//
// All exported methods are safe for concurrent use.
type Conn struct {
	// Read on every delivery: kept first, on one cache line.
	st       atomic.Uint32 // stQueued | stClosing | stClosed; changed only with mu held
	attached atomic.Bool   // registered: writes from other goroutines go through the shard
	t        transport.Transport

	mu      sync.Mutex     // guards the queue (fields to the blank line) and every change of st.
	queue   []*frame.Frame // frames not yet fully written, oldest first; each holds one reference
	off     int32          // bytes of queue[0] already written
	queued  int32          // bytes waiting in queue, excluding off (limits keep it under 1 GiB)
	evicted bool           // closed because the queue overflowed
	tclosed bool           // t.Close or CloseWrite has been called
	lost    bool           // the shard has been told to remove this connection
	// qmsgs counts the message frames in queue; qcounted is how many of them
	// the shard's pending gauge includes. They are reconciled (syncPending)
	// where a batch or a drain write ends, not on every push, so a frame that
	// is queued and written within one batch costs no atomic operation.
	qmsgs, qcounted int32
	// cause is a Cause: why the server side closed the connection first
	// (CauseNone otherwise). Set once with mu held, read by anyone.
	cause atomic.Uint32

	// seen is the unix second of the last frame read from the peer, written by
	// its reader (Touch) and read by the shard's idle sweep; zero for a
	// connection without a read side, which never times out.
	seen atomic.Uint32

	id    string
	shard *Shard // set by Register, before the connection is shared

	// Owned by the shard goroutine.
	slot  int32    // index in shard.list, -1 when not registered
	dirty bool     // in shard.dirty during a batch
	subs  []subRef // channels this connection subscribes to

	// Value is the embedder's per-connection value. Set it before Register; it is
	// read-only afterwards.
	Value any
}

// NewConn returns a connection with the given id writing to t.
func NewConn(id string, t transport.Transport) *Conn {
	c := &Conn{}
	c.Init(id, t)
	return c
}

// Init prepares a Conn embedded in another struct, as NewConn does for a new one.
// It must be called once, before the connection is used.
func (c *Conn) Init(id string, t transport.Transport) {
	c.id, c.t, c.slot = id, t, -1
}

// ID returns the connection id.
func (c *Conn) ID() string { return c.id }

// Touch records that the peer was alive at now: the reader calls it for
// every frame read, and the drain goroutine for every blocking write the peer
// took part of. A connection that was touched once is closed by its shard's
// idle sweep (1001, "ping timeout") when it stays silent for
// Config.IdleTimeout.
func (c *Conn) Touch(now time.Time) {
	if s := uint32(now.Unix()); c.seen.Load() != s {
		c.seen.Store(s)
	}
}

// Cause is why the server closed a connection before its peer did.
type Cause uint8

// Causes reported by Conn.Cause.
const (
	CauseNone         Cause = iota
	CauseSlowConsumer       // evicted: the outbound queue overflowed
	CauseTimeout            // silent for longer than Config.IdleTimeout
	CauseShutdown           // the shard shut down
	CauseWriteError         // a write to the socket failed
)

// String returns the cause's metric label ("" for CauseNone).
func (c Cause) String() string {
	switch c {
	case CauseSlowConsumer:
		return "slow_consumer"
	case CauseTimeout:
		return "timeout"
	case CauseShutdown:
		return "shutdown"
	case CauseWriteError:
		return "write_error"
	}
	return ""
}

// Cause reports why the server side closed the connection first, or "" when
// it did not (the peer closed, or it is open).
func (c *Conn) Cause() string { return Cause(c.cause.Load()).String() }

// setCauseLocked records the first cause. c.mu is held.
func (c *Conn) setCauseLocked(cause Cause) {
	if c.cause.Load() == uint32(CauseNone) && c.st.Load()&stClosed == 0 {
		c.cause.Store(uint32(cause))
	}
}

// Evicted reports whether the connection was closed as a slow consumer.
func (c *Conn) Evicted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evicted
}

// Closed reports whether the send side is closing or closed.
func (c *Conn) Closed() bool { return c.st.Load()&(stClosing|stClosed) != 0 }

func (c *Conn) limits() *Limits {
	if c.shard != nil {
		return &c.shard.cfg.Limits
	}
	return &unregisteredLimits
}

// Send writes f to the connection after everything sent before it; the caller
// keeps its own reference. A registered connection's frame is handed to its
// shard, waiting while the shard's inbox is full. It returns ErrConnClosed when
// the send side is closed (or the shard stopped). A message frame
// (frame.SetMessage) is counted in the shard's delivery ledger; a protocol
// frame (a reply, a pong, a close) is not.
func (c *Conn) Send(f *frame.Frame) error { return c.post(f, true) }

// TrySend is Send without waiting: it returns ErrInboxFull when the shard's inbox
// is full.
func (c *Conn) TrySend(f *frame.Frame) error { return c.post(f, false) }

// WriteRaw copies b, one or more complete encoded frames, and sends it like Send.
// It is how bytes built by the WebSocket library (the handshake response) join
// the same ordered stream as the engine's frames.
func (c *Conn) WriteRaw(b []byte) error {
	f := frame.Copy(b)
	err := c.post(f, true)
	f.Release()
	return err
}

// CloseAfterFlush stops accepting frames and closes the connection once what is
// already queued has been written (each write bounded by the write timeout). A
// TCP connection is half-closed first so the peer reads the close frame.
func (c *Conn) CloseAfterFlush() {
	if s := c.shard; s != nil && c.attached.Load() {
		if c.st.Load()&(stClosing|stClosed) == 0 {
			s.post(cmd{kind: cmdClose, conn: c})
		}
		return
	}
	c.mu.Lock()
	c.closeAfterFlushLocked()
	c.mu.Unlock()
}

// Close sends a close frame with code and reason, then closes the connection
// like CloseAfterFlush.
func (c *Conn) Close(code uint16, reason string) {
	f := frame.Close(code, reason)
	_ = c.post(f, true)
	f.Release()
	c.CloseAfterFlush()
}

// post hands a write to the shard when the connection is registered, and makes it
// directly otherwise.
func (c *Conn) post(f *frame.Frame, wait bool) error {
	if s := c.shard; s != nil && c.attached.Load() {
		if c.st.Load()&(stClosing|stClosed) != 0 {
			return ErrConnClosed
		}
		f.Retain(1)
		d := cmd{kind: cmdWrite, conn: c, frame: f}
		if wait {
			if !s.post(d) {
				return ErrConnClosed
			}
			return nil
		}
		if !s.tryPost(d) {
			f.Release()
			return ErrInboxFull
		}
		return nil
	}
	c.mu.Lock()
	err := c.writeOneLocked(f)
	c.mu.Unlock()
	return err
}

// writeOneLocked writes or queues one frame. c.mu is held; it is the path of
// unregistered connections and of the close frames the shard writes alone
// (idle timeout, shutdown, recovery overflow).
func (c *Conn) writeOneLocked(f *frame.Frame) error {
	st := c.st.Load()
	if st&(stClosing|stClosed) != 0 {
		return ErrConnClosed
	}
	if st&stQueued != 0 || len(c.queue) > 0 {
		return c.enqueueLocked(f)
	}
	b := f.Bytes()
	one := [1][]byte{b}
	n, err := c.t.TryWrite(one[:])
	if err != nil {
		c.failLocked()
		return err
	}
	c.countBytes(n)
	if n < len(b) {
		f.Retain(1)
		c.pushLocked(f)
		c.syncPendingLocked()
		c.off, c.queued = int32(n), int32(len(b)-n)
		c.startDrainLocked()
	} else if f.IsMessage() {
		c.countWritten(1)
	}
	return nil
}

// enqueueLocked appends f to the queue, evicting the connection on overflow (f
// is then dropped with what was queued).
func (c *Conn) enqueueLocked(f *frame.Frame) error {
	lim := c.limits()
	if len(c.queue)+1 > lim.MaxMessages || int(c.queued)+f.Len() > lim.MaxBytes {
		c.evictLocked()
		c.dropFrames(1, f.IsMessage())
		return ErrQueueFull
	}
	f.Retain(1)
	c.pushLocked(f)
	c.queued += int32(f.Len())
	if c.st.Load()&stQueued != 0 {
		c.syncPendingLocked() // behind a backlog: pending until the drain writes it
	}
	return nil
}

// queuePool recycles queue backing arrays, so queueing a frame (a reply, a
// publication in a mixed batch, a private message) allocates nothing in steady
// state and an idle connection holds no array. It holds fixed-size arrays, not
// slices: putting a slice would allocate its header on every Put.
var queuePool = sync.Pool{New: func() any { return new([pooledQueueLen]*frame.Frame) }}

// pooledQueueLen is the capacity of a pooled queue array. A queue that outgrows
// it is a backlog; its larger arrays are left to the garbage collector.
const pooledQueueLen = 8

// pushLocked appends f (whose reference the queue now holds) to the queue.
func (c *Conn) pushLocked(f *frame.Frame) {
	if c.queue == nil {
		c.queue = queuePool.Get().(*[pooledQueueLen]*frame.Frame)[:0]
	}
	c.queue = append(c.queue, f)
	if f.IsMessage() {
		c.qmsgs++
	}
}

// syncPendingLocked brings the shard's pending gauge up to date with this
// connection's queue.
func (c *Conn) syncPendingLocked() {
	if d := c.qmsgs - c.qcounted; d != 0 {
		if s := c.shard; s != nil {
			s.stats.pending.Add(int64(d))
		}
		c.qcounted = c.qmsgs
	}
}

// dropQueueLocked gives an empty queue's backing array back to the pool.
func (c *Conn) dropQueueLocked() {
	if cap(c.queue) == pooledQueueLen {
		a := (*[pooledQueueLen]*frame.Frame)(c.queue[:pooledQueueLen])
		clear(a[:])
		queuePool.Put(a)
	}
	c.queue = nil
}

// afterFastWrite finishes a fast-path write of frames that failed (err) or was
// short (n of the frames' bytes written): it closes the connection or queues
// the rest. Called only on the shard goroutine, which counted the frames as
// recipients.
func (c *Conn) afterFastWrite(frames []*frame.Frame, n int, err error) {
	if err != nil {
		c.mu.Lock()
		already := c.st.Load()&stClosed != 0 // closed by another goroutine: not a write error
		c.failLocked()
		c.mu.Unlock()
		w, rest := splitWritten(frames, n)
		c.countWritten(w)
		c.dropFrames(rest, true)
		if !already {
			c.failed(err)
		}
		return
	}
	c.backlog(frames, n)
}

// splitWritten counts the message frames of frames written whole by the first
// n bytes, and those after them.
func splitWritten(frames []*frame.Frame, n int) (written, rest int64) {
	for _, f := range frames {
		if !f.IsMessage() {
			n -= f.Len()
			continue
		}
		if n >= f.Len() {
			written++
		} else {
			rest++
		}
		n -= f.Len()
	}
	return written, rest
}

// writeBatch is the shard's fast path: frames, whose encoded bytes are bufs (total
// bytes long), go out in one non-blocking write when nothing is queued, and are
// queued behind the backlog otherwise. It returns the bytes written now and
// whether every frame was written whole by this call: the caller counts those
// as written (once per batch, not once per connection); in every other case
// this connection counted its frames itself (written, queued or dropped). The
// shard counted the frames as recipients. Called only on the shard goroutine.
func (c *Conn) writeBatch(frames []*frame.Frame, bufs [][]byte, total int) (int, bool) {
	if c.st.Load() == 0 {
		n, err := c.t.TryWrite(bufs)
		if err != nil || n < total {
			c.afterFastWrite(frames, n, err)
			return n, false
		}
		return n, true
	}
	c.mu.Lock()
	st := c.st.Load()
	if st&(stClosing|stClosed) != 0 {
		c.mu.Unlock()
		c.dropFrames(msgCount(frames), true)
		return 0, false
	}
	if st == 0 { // the drain goroutine finished since the load above
		c.mu.Unlock()
		return c.writeBatch(frames, bufs, total)
	}
	for i, f := range frames {
		if err := c.enqueueLocked(f); err != nil {
			c.mu.Unlock()
			c.dropFrames(msgCount(frames[i+1:]), true)
			c.failed(err)
			return 0, false
		}
	}
	c.mu.Unlock()
	return 0, false
}

// backlog queues what a short fast-path write left, starting with the frame it
// stopped in, and starts the drain goroutine; on overflow the connection is
// evicted and what was queued dropped.
func (c *Conn) backlog(frames []*frame.Frame, written int) {
	c.mu.Lock()
	if c.st.Load()&stClosed != 0 {
		c.mu.Unlock()
		w, rest := splitWritten(frames, written)
		c.countWritten(w)
		c.dropFrames(rest, true)
		return
	}
	skip := written
	for _, f := range frames {
		l := f.Len()
		if skip >= l {
			skip -= l
			if f.IsMessage() {
				c.countWritten(1)
			}
			continue
		}
		f.Retain(1)
		c.pushLocked(f)
		c.queued += int32(l)
	}
	c.off = int32(skip)
	c.queued -= int32(skip)
	c.syncPendingLocked()
	if lim := c.limits(); len(c.queue) > lim.MaxMessages || int(c.queued) > lim.MaxBytes {
		c.evictLocked()
		c.mu.Unlock()
		c.failed(ErrQueueFull)
		return
	}
	c.startDrainLocked()
	c.mu.Unlock()
}

// enqueue queues f for the shard's flush at the end of a batch; the shard
// counted it as a recipient. It reports whether f was queued. Called only on
// the shard goroutine.
func (c *Conn) enqueue(f *frame.Frame, scratch *[][]byte) bool {
	c.mu.Lock()
	st := c.st.Load()
	if st&(stClosing|stClosed) != 0 {
		c.mu.Unlock()
		c.dropFrames(1, f.IsMessage())
		return false
	}
	if lim := c.limits(); st&stQueued == 0 && len(c.queue) > 0 &&
		(len(c.queue)+1 > lim.MaxMessages || int(c.queued)+f.Len() > lim.MaxBytes) {
		// What this batch queued is not a backlog yet: write it before
		// judging the connection slow.
		w, err := c.flushLocked(scratch)
		c.countWritten(w)
		if err != nil {
			c.mu.Unlock()
			c.dropFrames(1, f.IsMessage())
			c.failed(err)
			return false
		}
		if c.st.Load()&stClosed != 0 {
			c.mu.Unlock()
			c.dropFrames(1, f.IsMessage())
			return false
		}
	}
	err := c.enqueueLocked(f)
	c.mu.Unlock()
	if err != nil {
		c.failed(err)
		return false
	}
	return true
}

// flushQueued writes everything queued in one non-blocking call; the rest
// goes to the drain goroutine. It returns the message frames written whole,
// for the caller to count once per batch. Called only on the shard goroutine,
// for the connections it queued frames on during a batch; scratch is its
// reusable buffer list.
func (c *Conn) flushQueued(scratch *[][]byte) int64 {
	c.mu.Lock()
	if c.st.Load()&(stQueued|stClosed) != 0 || len(c.queue) == 0 {
		c.syncPendingLocked()
		c.mu.Unlock()
		return 0
	}
	written, err := c.flushLocked(scratch)
	c.mu.Unlock()
	if err != nil {
		c.failed(err)
	}
	return written
}

// flushLocked writes what is queued in one non-blocking call and hands the
// rest to a drain goroutine; it returns the message frames written whole. On
// a write error the connection is failed (the caller reports it once c.mu is
// released). c.mu is held, no drain runs.
func (c *Conn) flushLocked(scratch *[][]byte) (int64, error) {
	bufs := c.appendQueuedLocked((*scratch)[:0])
	n, err := c.t.TryWrite(bufs)
	clear(bufs)
	*scratch = bufs[:0]
	if err != nil {
		c.failLocked()
		return 0, err
	}
	c.countBytes(n)
	written := c.consumeLocked(n)
	c.syncPendingLocked()
	if len(c.queue) > 0 {
		c.startDrainLocked()
	} else if c.st.Load()&stClosing != 0 {
		c.finishLocked()
	}
	return written, nil
}

// appendQueuedLocked appends the unwritten bytes of the queue to dst.
func (c *Conn) appendQueuedLocked(dst [][]byte) [][]byte {
	return c.appendQueuedUpTo(dst, math.MaxInt)
}

// appendQueuedUpTo appends the unwritten bytes of the first queued frames, up
// to about limit bytes (at least one frame).
func (c *Conn) appendQueuedUpTo(dst [][]byte, limit int) [][]byte {
	total := 0
	for i, f := range c.queue {
		b := f.Bytes()
		if i == 0 {
			b = b[c.off:]
		}
		if i > 0 && total+len(b) > limit {
			break
		}
		dst = append(dst, b)
		total += len(b)
	}
	return dst
}

// drainChunk bounds what one blocking write of the drain goroutine carries,
// so its deadline (Limits.WriteTimeout) bounds how long the peer may make no
// progress, not how long the whole backlog may take: a slow reader that keeps
// reading is not cut off, a stalled one is.
const drainChunk = 256 << 10

// consumeLocked drops n written bytes from the front of the queue, releasing the
// frames that are done; it returns how many of them were messages (written
// whole: the caller counts them).
func (c *Conn) consumeLocked(n int) int64 {
	done, msgs := 0, int64(0)
	for _, f := range c.queue {
		rest := f.Len() - int(c.off)
		if n < rest {
			c.off += int32(n)
			c.queued -= int32(n)
			break
		}
		n -= rest
		c.queued -= int32(rest)
		c.off = 0
		if f.IsMessage() {
			msgs++
		}
		f.Release()
		done++
	}
	c.qmsgs -= int32(msgs)
	if done == len(c.queue) {
		c.dropQueueLocked() // the backlog is over: an idle connection holds no array
		return msgs
	}
	n = copy(c.queue, c.queue[done:])
	clear(c.queue[n:])
	c.queue = c.queue[:n]
	return msgs
}

// countWritten counts n message frames written whole.
func (c *Conn) countWritten(n int64) {
	if s := c.shard; s != nil && n > 0 {
		s.stats.written.Add(n)
	}
}

// dropFrames counts n message frames that this connection will never write,
// for the reason its cause gives; msg false counts nothing (a protocol frame).
func (c *Conn) dropFrames(n int64, msg bool) {
	if s := c.shard; s != nil && n > 0 && msg {
		s.stats.dropped(c.causeForDrops(), n)
	}
}

// causeForDrops is the reason frames are dropped with this connection: an
// eviction or a shutdown say so; anything else is a connection that closed
// first.
func (c *Conn) causeForDrops() Cause {
	switch cause := Cause(c.cause.Load()); cause {
	case CauseSlowConsumer, CauseShutdown:
		return cause
	}
	return CauseNone
}

func (c *Conn) countBytes(n int) {
	if s := c.shard; s != nil && n > 0 {
		s.stats.bytes.Add(int64(n))
	}
}

func (c *Conn) startDrainLocked() {
	if st := c.st.Load(); st&stQueued == 0 {
		c.st.Store(st | stQueued)
		go c.drain()
	}
}

// drain writes the queue with blocking writes until it is empty.
// Runs in its own goroutine, one per connection with a backlog; it exits as soon
// as the backlog is gone or the connection is closed.
func (c *Conn) drain() {
	var bufs [][]byte
	for {
		c.mu.Lock()
		st := c.st.Load()
		if st&stClosed != 0 {
			c.releaseQueueLocked()
			c.st.Store(st &^ stQueued)
			c.mu.Unlock()
			return
		}
		if len(c.queue) == 0 {
			c.st.Store(st &^ stQueued)
			if st&stClosing != 0 {
				c.finishLocked()
			}
			c.mu.Unlock()
			return
		}
		bufs = c.appendQueuedUpTo(bufs[:0], drainChunk)
		timeout := c.limits().WriteTimeout
		c.mu.Unlock()

		n, err := c.write(bufs, timeout)
		clear(bufs)
		c.countBytes(n)

		if n > 0 {
			// The peer takes what it is sent: it is reading, so it is alive even
			// when the pings it must answer wait behind this backlog.
			c.Touch(time.Now())
		}
		c.mu.Lock()
		c.countWritten(c.consumeLocked(n))
		c.syncPendingLocked()
		failed := err != nil && c.st.Load()&stClosed == 0
		if failed {
			c.failLocked()
		}
		c.mu.Unlock()
		if failed {
			c.reportLost(err)
		}
	}
}

// write is the drain goroutine's blocking write. A transport that panics
// (an embedder's, through Attach) fails this connection only.
func (c *Conn) write(bufs [][]byte, timeout time.Duration) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			if s := c.shard; s != nil && s.cfg.OnPanic != nil {
				s.cfg.OnPanic("drain", v)
			}
			n, err = 0, errTransportPanic
		}
	}()
	return c.t.Write(bufs, time.Now().Add(timeout))
}

// failLocked closes the send side after a write error.
func (c *Conn) failLocked() {
	c.setCauseLocked(CauseWriteError)
	st := c.st.Load()
	c.st.Store(st | stClosed)
	if st&stQueued == 0 {
		c.releaseQueueLocked()
	}
	c.closeTransportLocked()
}

// evictLocked force-disconnects a slow consumer. When no write is in flight and
// the socket is not in the middle of a frame, the peer gets close 1013 (try again
// later) if its socket takes it; then the connection is closed at once, which
// also unblocks a drain goroutine stuck in a write.
func (c *Conn) evictLocked() {
	c.setCauseLocked(CauseSlowConsumer)
	c.evicted = true
	st := c.st.Load()
	c.st.Store(st | stClosed)
	if st&stQueued == 0 {
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

var slowConsumerClose = frame.Static(frame.OpClose, closePayload(CloseSlowConsumer, "slow consumer: outbound queue full"))

// failed reports, from the shard goroutine, a connection whose send side failed
// or was evicted: it is counted, logged and removed at the end of the batch.
// c.mu must not be held.
func (c *Conn) failed(err error) {
	s := c.shard
	if s == nil || !c.markLost() {
		return
	}
	s.countLost(c, err)
	s.lost = append(s.lost, c)
}

// reportLost reports, from a drain goroutine, a connection whose send side
// failed: its shard counts, logs and removes it. c.mu must not be held.
func (c *Conn) reportLost(err error) {
	s := c.shard
	if s == nil || !c.markLost() {
		return
	}
	s.countLost(c, err)
	s.post(cmd{kind: cmdLost, conn: c})
}

// markLost reports whether this is the first report of c's failure.
func (c *Conn) markLost() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := !c.lost
	c.lost = true
	return first
}

// countLost counts and logs a failed or evicted connection.
func (s *Shard) countLost(c *Conn, err error) {
	if err == ErrQueueFull {
		s.stats.forced.Add(1)
		lim := &s.cfg.Limits
		s.cfg.Logger.Warn("shard: slow consumer evicted",
			"conn", c.id, "shard", s.cfg.Index, "reason", "outbound queue full",
			"max_messages", lim.MaxMessages, "max_bytes", lim.MaxBytes)
		return
	}
	s.stats.writeErrors.Add(1)
	s.cfg.Logger.Info("shard: write failed, connection closed", "conn", c.id, "shard", s.cfg.Index, "err", err)
}

// releaseQueueLocked drops what is queued (the connection is closed): the
// message frames among it are counted as dropped.
func (c *Conn) releaseQueueLocked() {
	var msgs int64
	for _, f := range c.queue {
		if f.IsMessage() {
			msgs++
		}
		f.Release()
	}
	c.dropQueueLocked()
	c.off, c.queued = 0, 0
	c.qmsgs = 0
	c.syncPendingLocked()
	if s := c.shard; s != nil && msgs > 0 {
		s.stats.dropped(c.causeForDrops(), msgs)
	}
}

// closeTransportLocked closes the transport the first time it is called.
func (c *Conn) closeTransportLocked() {
	if !c.tclosed {
		c.tclosed = true
		_ = c.t.Close()
	}
}

// closeAfterFlushLocked marks the connection closing and finishes at once when
// nothing is queued; otherwise the flush or the drain goroutine finishes it.
func (c *Conn) closeAfterFlushLocked() {
	st := c.st.Load()
	if st&(stClosing|stClosed) != 0 {
		return
	}
	c.st.Store(st | stClosing)
	if st&stQueued == 0 && len(c.queue) == 0 {
		c.finishLocked()
	}
}

// finishLocked ends a graceful close once the queue has drained. A transport that
// can half-close sends FIN and keeps its read side open for a short linger, so the
// peer reads the close frame and answers it instead of being reset; the read side
// (or the linger timer) then closes it fully through Abort.
func (c *Conn) finishLocked() {
	c.st.Store(c.st.Load() | stClosed)
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

// Abort closes the connection now, dropping whatever is queued. It is idempotent;
// only the first call closes the transport.
func (c *Conn) Abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st.Load()
	if st&stClosed == 0 {
		c.st.Store(st | stClosed)
		if st&stQueued == 0 {
			c.releaseQueueLocked()
		}
	}
	c.closeTransportLocked() // also ends a half-close made by finishLocked
}
