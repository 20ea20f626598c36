package shard

// The shard's tables: connections by id and as a dense list, channels and
// their subscribers. Only the Run goroutine calls these.

type channel struct {
	name string
	subs []*Conn
	// rec holds the subscriptions of this channel that are recovering or
	// filtering duplicates after a recovery (recovery.go); nil when none, so
	// a publication to a channel without recoveries costs nothing more.
	rec map[*Conn]*recovery
}

type subRef struct {
	ch  *channel
	idx int32 // position of the connection in ch.subs
}

func (s *Shard) register(c *Conn) error {
	if s.closing {
		return ErrShutdown
	}
	if _, dup := s.conns[c.id]; dup {
		return ErrDuplicateID
	}
	s.conns[c.id] = c
	c.slot = int32(len(s.list))
	s.list = append(s.list, c)
	s.slots = append(s.slots, slot{t: c.t, mode: modeOf(c)})
	c.attached.Store(true)
	s.stats.conns.Add(1)
	s.stats.registered.Add(1)
	return nil
}

// registered reports whether c is in the shard's table.
func (s *Shard) registered(c *Conn) bool {
	return c.slot >= 0 && int(c.slot) < len(s.list) && s.list[c.slot] == c
}

// remove drops c from every table and closes its send side. It is idempotent.
func (s *Shard) remove(c *Conn) {
	if !s.registered(c) {
		return
	}
	i := c.slot
	last := len(s.list) - 1
	moved := s.list[last]
	s.list[i] = moved
	s.slots[i] = s.slots[last]
	moved.slot = i
	s.list[last] = nil
	s.slots[last] = slot{}
	s.list = s.list[:last]
	s.slots = s.slots[:last]
	c.slot = -1
	c.attached.Store(false)
	delete(s.conns, c.id)
	for len(c.subs) > 0 {
		s.dropSub(c, len(c.subs)-1)
	}
	c.subs = nil
	c.dirty = false // if it is still in s.dirty, the flush skips a closed conn
	s.stats.conns.Add(-1)
	if s.closing {
		c.mu.Lock()
		c.setCauseLocked(CauseShutdown)
		c.mu.Unlock()
	}
	c.Abort()
	if s.cfg.OnRemove != nil {
		s.cfg.OnRemove(c)
	}
}

// removeLost removes the connections whose send side failed during a batch.
func (s *Shard) removeLost() {
	for i, c := range s.lost {
		s.remove(c)
		s.lost[i] = nil
	}
	s.lost = s.lost[:0]
}

// subscribe adds c to channel name; recovering starts its recovery (a
// subscription c had is replaced).
func (s *Shard) subscribe(c *Conn, name string, recovering bool) (bool, error) {
	if !s.registered(c) {
		return false, ErrConnClosed
	}
	for i, r := range c.subs {
		if r.ch.name == name {
			if !recovering {
				return false, nil
			}
			s.dropSub(c, i) // recover from scratch
			break
		}
	}
	if len(c.subs) >= s.cfg.MaxSubscriptions {
		return false, ErrTooManySubscriptions
	}
	ch := s.channels[name]
	if ch == nil {
		ch = &channel{name: name}
		s.channels[name] = ch
		if s.cfg.OnChannel != nil {
			s.cfg.OnChannel(s.cfg.Index, name, true)
		}
	}
	c.subs = append(c.subs, subRef{ch: ch, idx: int32(len(ch.subs))})
	ch.subs = append(ch.subs, c)
	if recovering {
		if ch.rec == nil {
			ch.rec = make(map[*Conn]*recovery)
		}
		ch.rec[c] = &recovery{}
	}
	return true, nil
}

func (s *Shard) unsubscribe(c *Conn, name string) bool {
	for i, r := range c.subs {
		if r.ch.name == name {
			s.dropSub(c, i)
			return true
		}
	}
	return false
}

// dropSub removes c's i-th subscription, swapping the channel's last subscriber
// into its place, and drops the channel when it has no subscriber left.
func (s *Shard) dropSub(c *Conn, i int) {
	r := c.subs[i]
	ch := r.ch
	if ch.rec != nil {
		if rec := ch.rec[c]; rec != nil {
			s.discardRecovery(c, rec)
			delete(ch.rec, c)
			if len(ch.rec) == 0 {
				ch.rec = nil
			}
		}
	}
	last := len(ch.subs) - 1
	if moved := ch.subs[last]; moved != c {
		ch.subs[r.idx] = moved
		for j := range moved.subs {
			if moved.subs[j].ch == ch {
				moved.subs[j].idx = r.idx
				break
			}
		}
	}
	ch.subs[last] = nil
	ch.subs = ch.subs[:last]
	c.subs[i] = c.subs[len(c.subs)-1]
	c.subs = c.subs[:len(c.subs)-1]
	if len(ch.subs) == 0 {
		delete(s.channels, ch.name)
		if s.cfg.OnChannel != nil {
			s.cfg.OnChannel(s.cfg.Index, ch.name, false)
		}
	}
}

func (s *Shard) snapshot() Stats {
	st := Stats{
		Index:        s.cfg.Index,
		Conns:        len(s.list),
		Channels:     len(s.channels),
		Broadcasts:   s.msgs[0],
		Publications: s.msgs[1],
		Privates:     s.msgs[2],
		Counters:     s.Counters(),
	}
	for _, ch := range s.channels {
		st.Subscriptions += len(ch.subs)
	}
	return st
}

func (s *Shard) channelNames() []string {
	names := make([]string, 0, len(s.channels))
	for name := range s.channels {
		names = append(names, name)
	}
	return names
}
