package shard

import (
	"time"

	"github.com/shardhub/shardhub/shard/frame"
)

// CloseGoingAway is the close code sent to every connection at shutdown.
const CloseGoingAway = 1001

// runShutdown sends close 1001 to every connection, serves commands during the
// grace window while connections leave, then closes the send side of those
// left and disposes of what is still in the inbox.
func (s *Shard) runShutdown() {
	s.closing = true
	goingAway := frame.Close(CloseGoingAway, "server shutting down")
	for _, c := range s.list {
		c.mu.Lock()
		c.setCauseLocked(CauseShutdown)
		_ = c.writeOneLocked(goingAway)
		c.closeAfterFlushLocked()
		c.mu.Unlock()
		s.syncSlot(c)
	}
	goingAway.Release()
	s.serveDuringGrace()
	for len(s.list) > 0 {
		s.remove(s.list[len(s.list)-1])
	}
	for {
		select {
		case c := <-s.in:
			one := [1]cmd{c}
			s.dropBatch(one[:])
			if c.frame != nil {
				c.frame.Release()
			}
		default:
			return
		}
	}
}

// serveDuringGrace keeps handling commands (Register is refused, frames are
// dropped) until the grace window ends or no connection is left, instead of
// sleeping through it.
func (s *Shard) serveDuringGrace() {
	if len(s.list) == 0 {
		return
	}
	timer := time.NewTimer(s.cfg.ShutdownGrace)
	defer timer.Stop()
	for len(s.list) > 0 {
		select {
		case c := <-s.in:
			s.handleBatch(c)
		case <-timer.C:
			return
		}
	}
}

// dropBatch handles a batch that arrived during shutdown: frames are dropped,
// counted once for every connection they would have reached; every other
// command is carried out.
func (s *Shard) dropBatch(batch []cmd) {
	for i := range batch {
		c := &batch[i]
		if !c.kind.hasFrame() {
			s.control(c)
			continue
		}
		if !c.frame.IsMessage() {
			continue
		}
		var n int64
		switch c.kind {
		case cmdBroadcast:
			n = int64(len(s.list))
		case cmdPublish:
			if ch := s.channels[c.key]; ch != nil {
				n = int64(len(ch.subs))
			}
		case cmdSendTo:
			if s.conns[c.key] != nil {
				n = 1
			}
		case cmdWrite:
			n = 1
		}
		s.stats.recipients.Add(n)
		s.stats.droppedShutdown.Add(n)
	}
}
