package shard

import (
	"strconv"
	"strings"

	"github.com/shardhub/shardhub/shard/frame"
)

// Recovery is per-subscription shard state. A connection that comes back with
// the offset of the last publication it saw is subscribed at once in
// recovering mode (SubscribeRecovering): from that command on, the live
// publications of the channel that reach it are kept here instead of written.
// Its engine reads the channel's history and posts the recovered publications
// to the connection, then EndRecovery(last): the shard writes the kept
// publications newer than last, in order, and from then until a publication
// newer than everything written arrives, drops duplicates still in flight
// (a publication can be both in the history read and on its way live). The
// inbox's order does the rest: nothing is written to the connection between
// the recovered publications and the kept ones, and no lock is held anywhere
// while the history is read.

// recovery is one subscription's recovery state.
type recovery struct {
	kept     []keptPub // live publications held back, oldest first
	overflow bool      // more arrived than Config.MaxRecoveryBuffer
	// After EndRecovery: drop publications at or below the high-water mark.
	filtering bool
	hwm       offset
}

type keptPub struct {
	f   *frame.Frame // one reference held
	off offset
}

// offset is a parsed history offset: "<ms>-<seq>" (Redis stream ids) or a
// plain decimal number (seq 0). ok is false for "" or anything else: such
// publications are never treated as duplicates.
type offset struct {
	ms, seq uint64
	ok      bool
}

func parseOffset(s string) offset {
	a, b, two := strings.Cut(s, "-")
	ms, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return offset{}
	}
	var seq uint64
	if two {
		if seq, err = strconv.ParseUint(b, 10, 64); err != nil {
			return offset{}
		}
	}
	return offset{ms: ms, seq: seq, ok: true}
}

// after reports whether o is newer than p (an unparsed p is older than any o).
func (o offset) after(p offset) bool {
	switch {
	case !p.ok:
		return true
	case !o.ok:
		return false
	case o.ms != p.ms:
		return o.ms > p.ms
	}
	return o.seq > p.seq
}

// publishRecovering delivers f, a publication of ch with history offset off,
// to ch's subscribers, some of which are recovering or filtering duplicates.
func (s *Shard) publishRecovering(ch *channel, off string, f *frame.Frame) {
	o := parseOffset(off)
	isMsg := f.IsMessage()
	for _, c := range ch.subs {
		r := ch.rec[c]
		switch {
		case r == nil:
		case !r.filtering:
			if len(r.kept) >= s.cfg.MaxRecoveryBuffer {
				if !r.overflow {
					r.overflow = true
					s.closeOverflowed(c)
				}
				if isMsg {
					s.stats.recipients.Add(1)
					s.stats.droppedClosed.Add(1)
				}
				continue
			}
			f.Retain(1)
			r.kept = append(r.kept, keptPub{f: f, off: o})
			continue
		case o.ok && !o.after(r.hwm):
			continue // a duplicate of a recovered publication: it was delivered
		default:
			// Newer than anything recovered: so is every later one.
			s.dropRecovery(ch, c)
		}
		to := [1]*Conn{c}
		s.enqueueAll(to[:], f)
	}
}

// closeOverflowed closes a connection whose recovery buffer overflowed: it
// must come back and recover again rather than miss publications.
func (s *Shard) closeOverflowed(c *Conn) {
	s.cfg.Logger.Warn("shard: closing recovering connection: too many live publications during recovery",
		"conn", c.id, "shard", s.cfg.Index, "limit", s.cfg.MaxRecoveryBuffer)
	c.mu.Lock()
	_ = c.writeOneLocked(recoveryOverflowClose)
	c.closeAfterFlushLocked()
	c.mu.Unlock()
	s.syncSlot(c)
}

var recoveryOverflowClose = frame.Static(frame.OpClose, closePayload(CloseSlowConsumer, "recovery overflow, reconnect and recover again"))

// endRecovery handles EndRecovery for c on channel name.
func (s *Shard) endRecovery(c *Conn, name, last string, recovered bool) {
	ch := s.channels[name]
	if ch == nil || ch.rec == nil {
		return
	}
	r := ch.rec[c]
	if r == nil || r.filtering {
		return
	}
	hwm := offset{}
	if recovered {
		hwm = parseOffset(last)
	}
	kept := r.kept
	r.kept = nil
	for i, k := range kept {
		if !recovered || k.off.after(hwm) || !k.off.ok {
			to := [1]*Conn{c}
			s.enqueueAll(to[:], k.f)
			if k.off.ok {
				hwm = k.off
			}
		}
		k.f.Release()
		kept[i] = keptPub{}
	}
	if hwm.ok {
		r.filtering, r.hwm = true, hwm
	} else {
		s.dropRecovery(ch, c)
	}
}

// dropRecovery forgets c's recovery state on ch.
func (s *Shard) dropRecovery(ch *channel, c *Conn) {
	delete(ch.rec, c)
	if len(ch.rec) == 0 {
		ch.rec = nil
	}
}

// discardRecovery releases what a recovery kept when its subscription ends
// before EndRecovery: those publications are dropped with the connection or
// the subscription.
func (s *Shard) discardRecovery(c *Conn, r *recovery) {
	var n int64
	for i, k := range r.kept {
		if k.f.IsMessage() {
			n++
		}
		k.f.Release()
		r.kept[i] = keptPub{}
	}
	r.kept = nil
	if n > 0 {
		s.stats.recipients.Add(n)
		if s.closing {
			s.stats.droppedShutdown.Add(n)
		} else {
			s.stats.droppedClosed.Add(n)
		}
	}
}
