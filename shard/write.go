package shard

import (
	"time"

	"github.com/shardhub/shardhub/shard/frame"
)

// The write paths. Run handles the commands waiting in its inbox as one batch
// (up to Config.MaxBatch): a batch of broadcasts is written to each connection
// with a single TryWrite carrying every frame of the batch; any other batch
// queues each frame on its targets, in inbox order, and then flushes each
// connection once.

// handleBatch handles first and whatever else waits in the inbox as one batch.
func (s *Shard) handleBatch(first cmd) {
	batch := append(s.batch[:0], first)
	allBroadcast := first.kind == cmdBroadcast
fill:
	for len(batch) < s.cfg.MaxBatch {
		select {
		case c := <-s.in:
			batch = append(batch, c)
			allBroadcast = allBroadcast && c.kind == cmdBroadcast
		default:
			break fill
		}
	}
	switch {
	case s.closing:
		s.dropBatch(batch)
	case allBroadcast:
		s.msgs[0] += int64(len(batch))
		s.writeAll(batch)
	case len(batch) == 1 && s.direct(&batch[0]):
		s.writeOne(&batch[0])
	default:
		s.writeQueued(batch)
	}
	s.stats.batches.Add(1)
	for i := range batch {
		if f := batch[i].frame; f != nil {
			f.Release()
		}
		batch[i] = cmd{}
	}
	s.batch = batch[:0]
	s.removeLost()
}

// direct reports whether a lone frame command can be written without
// queueing: a broadcast, a private message, or a publication to a channel
// with no recovery in progress.
func (s *Shard) direct(c *cmd) bool {
	switch c.kind {
	case cmdBroadcast, cmdSendTo:
		return true
	case cmdPublish:
		ch := s.channels[c.key]
		return ch == nil || ch.rec == nil
	}
	return false
}

// prepare lays the batch's frames and their bytes out for writeBatch.
func (s *Shard) prepare(batch []cmd) (frames []*frame.Frame, bufs [][]byte, total int) {
	frames, bufs = s.frames[:0], s.bufs[:0]
	for i := range batch {
		f := batch[i].frame
		frames = append(frames, f)
		b := f.Bytes()
		bufs = append(bufs, b)
		total += len(b)
	}
	s.frames, s.bufs = frames, bufs
	return frames, bufs, total
}

func (s *Shard) unprepare() {
	clear(s.frames)
	clear(s.bufs)
}

// msgCount is the number of message frames (the ledger's unit) in frames.
func msgCount(frames []*frame.Frame) int64 {
	var n int64
	for _, f := range frames {
		if f.IsMessage() {
			n++
		}
	}
	return n
}

// writeAll writes a batch of broadcasts to every connection: one write per
// connection carrying all the batch's frames.
func (s *Shard) writeAll(batch []cmd) {
	frames, bufs, total := s.prepare(batch)
	s.writeEvery(frames, bufs, total)
	s.unprepare()
}

// writeEvery writes frames to every connection, walking the dense slots and
// touching a Conn only when its slot says it needs the slow path.
func (s *Shard) writeEvery(frames []*frame.Frame, bufs [][]byte, total int) {
	nMsg := msgCount(frames)
	var whole, skipped, written int64
	for i := range s.slots {
		sl := &s.slots[i]
		switch sl.mode {
		case fastDirect:
			n, err := sl.t.TryWrite(bufs)
			written += int64(n)
			if err == nil && n == total {
				whole++
				continue
			}
			c := s.list[i]
			c.afterFastWrite(frames, n, err)
			sl.mode = modeOf(c)
		case fastSlow:
			c := s.list[i]
			n, all := c.writeBatch(frames, bufs, total)
			written += int64(n)
			if all {
				whole++
			}
			sl.mode = modeOf(c)
		default:
			skipped++ // closed, waiting to be removed: the frames are not written
		}
	}
	s.stats.recipients.Add(nMsg * int64(len(s.slots)))
	s.stats.written.Add(nMsg * whole)
	s.stats.droppedClosed.Add(nMsg * skipped)
	s.stats.bytes.Add(written)
}

// syncSlot refreshes c's slot after the shard changed c's state through the Conn.
func (s *Shard) syncSlot(c *Conn) {
	if s.registered(c) {
		s.slots[c.slot].mode = modeOf(c)
	}
}

// writeOne writes a lone frame command to its targets without queueing.
func (s *Shard) writeOne(c *cmd) {
	one := [1]cmd{*c}
	frames, bufs, total := s.prepare(one[:])
	switch c.kind {
	case cmdBroadcast:
		s.msgs[0]++
		s.writeEvery(frames, bufs, total)
	case cmdPublish:
		s.msgs[1]++
		if ch := s.channels[c.key]; ch != nil {
			s.writeTo(ch.subs, frames, bufs, total)
		}
	case cmdSendTo:
		s.msgs[2]++
		if conn := s.conns[c.key]; conn != nil {
			to := [1]*Conn{conn}
			s.writeTo(to[:], frames, bufs, total)
		}
	}
	s.unprepare()
}

func (s *Shard) writeTo(conns []*Conn, frames []*frame.Frame, bufs [][]byte, total int) {
	var written, whole int64
	for _, c := range conns {
		n, all := c.writeBatch(frames, bufs, total)
		written += int64(n)
		if all {
			whole++
		} else {
			s.syncSlot(c)
		}
	}
	nMsg := msgCount(frames)
	s.stats.recipients.Add(nMsg * int64(len(conns)))
	s.stats.written.Add(nMsg * whole)
	s.stats.bytes.Add(written)
}

// writeQueued handles a mixed batch in inbox order: each frame is queued on
// each of its targets, then every connection that got frames writes them in
// one call. Commands that end a connection first flush what it has, so they
// apply after the frames before them.
func (s *Shard) writeQueued(batch []cmd) {
	for i := range batch {
		c := &batch[i]
		switch c.kind {
		case cmdBroadcast:
			s.msgs[0]++
			s.enqueueAll(s.list, c.frame)
		case cmdPublish:
			s.msgs[1]++
			if ch := s.channels[c.key]; ch != nil {
				if ch.rec == nil {
					s.enqueueAll(ch.subs, c.frame)
				} else {
					s.publishRecovering(ch, c.offset, c.frame)
				}
			}
		case cmdSendTo:
			s.msgs[2]++
			if conn := s.conns[c.key]; conn != nil {
				to := [1]*Conn{conn}
				s.enqueueAll(to[:], c.frame)
			}
		case cmdWrite:
			to := [1]*Conn{c.conn}
			s.enqueueAll(to[:], c.frame)
		default:
			s.control(c)
		}
	}
	s.flushDirty()
}

// control handles a command that is not a frame for connections.
func (s *Shard) control(c *cmd) {
	var r result
	switch c.kind {
	case cmdClose:
		s.flushConn(c.conn)
		c.conn.mu.Lock()
		c.conn.closeAfterFlushLocked()
		c.conn.mu.Unlock()
		s.syncSlot(c.conn)
		return
	case cmdLost:
		s.flushConn(c.conn)
		s.remove(c.conn)
		return
	case cmdRecoverEnd:
		s.endRecovery(c.conn, c.key, c.offset, c.flag)
		return
	case cmdRegister:
		r.err = s.register(c.conn)
	case cmdUnregister:
		s.flushConn(c.conn)
		s.remove(c.conn)
	case cmdSubscribe:
		r.ok, r.err = s.subscribe(c.conn, c.key, c.flag)
		if r.err == nil && c.frame != nil {
			to := [1]*Conn{c.conn}
			s.enqueueAll(to[:], c.frame) // the reply, before any later publication
		}
	case cmdUnsubscribe:
		r.ok = s.unsubscribe(c.conn, c.key)
	case cmdLookup:
		r.conn = s.conns[c.key]
	case cmdStats:
		r.stats = s.snapshot()
	case cmdChannels:
		r.names = s.channelNames()
	case cmdCount:
		if ch := s.channels[c.key]; ch != nil {
			r.n = len(ch.subs)
		}
	case cmdBarrier:
	}
	c.reply <- r
}

// flushDirty writes what every connection queued in this batch.
func (s *Shard) flushDirty() {
	var written int64
	for i, c := range s.dirty {
		if c.dirty {
			c.dirty = false
			written += c.flushQueued(&s.scratch)
			s.syncSlot(c)
		}
		s.dirty[i] = nil
	}
	s.dirty = s.dirty[:0]
	s.stats.written.Add(written)
}

// flushConn writes what c has queued in this batch now, ahead of an operation.
func (s *Shard) flushConn(c *Conn) {
	if c.dirty {
		c.dirty = false // its entry in s.dirty is skipped
		s.stats.written.Add(c.flushQueued(&s.scratch))
		s.syncSlot(c)
	}
}

// enqueueAll queues f on conns for the flush at the end of the batch.
func (s *Shard) enqueueAll(conns []*Conn, f *frame.Frame) {
	if f.IsMessage() {
		s.stats.recipients.Add(int64(len(conns)))
	}
	for _, c := range conns {
		if c.enqueue(f, &s.scratch) && !c.dirty {
			c.dirty = true
			s.dirty = append(s.dirty, c)
		}
	}
}

var pingFrame = frame.Static(frame.OpPing, nil)

// ping writes a ping frame to every connection; the idle sweep closes the
// connections that stop answering.
func (s *Shard) ping() {
	frames := [1]*frame.Frame{pingFrame}
	bufs := [1][]byte{pingFrame.Bytes()}
	for i, c := range s.list {
		if s.slots[i].mode != fastSkip {
			c.writeBatch(frames[:], bufs[:], len(bufs[0])) // a ping: nothing to count
			s.slots[i].mode = modeOf(c)
		}
	}
	s.removeLost()
}

var timeoutClose = frame.Static(frame.OpClose, closePayload(CloseGoingAway, "ping timeout"))

func closePayload(code uint16, reason string) []byte {
	return append([]byte{byte(code >> 8), byte(code)}, reason...)
}

// sweep closes the connections whose peers have been silent for longer than
// IdleTimeout: one atomic load per connection. now is read here, not taken
// from the ticker: a tick waits in its channel, and a connection touched since
// would look touched in the future.
func (s *Shard) sweep() {
	limit := int64(s.cfg.IdleTimeout / time.Second)
	sec := time.Now().Unix()
	for i, c := range s.list {
		seen := int64(c.seen.Load())
		if seen == 0 || sec-seen <= limit || c.st.Load()&stQueued != 0 {
			// Not silent long enough; or silent but reading: a connection
			// with a backlog being written has its ping stuck behind it, and
			// the drain's write deadline (Limits.WriteTimeout) closes it if it
			// stops reading.
			continue
		}
		if s.slots[i].mode == fastSkip {
			continue
		}
		c.mu.Lock()
		c.setCauseLocked(CauseTimeout)
		_ = c.writeOneLocked(timeoutClose)
		c.closeAfterFlushLocked()
		c.mu.Unlock()
		s.slots[i].mode = modeOf(c)
	}
	s.removeLost()
}
