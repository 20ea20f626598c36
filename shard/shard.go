package shard

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardhub/shardhub/shard/frame"
	"github.com/shardhub/shardhub/shard/transport"
)

// Target says which connections of a shard a Delivery goes to.
type Target uint8

// Delivery targets.
const (
	ToAll     Target = iota // every connection of the shard
	ToChannel               // subscribers of Delivery.Key
	ToConn                  // the connection whose id is Delivery.Key
	numTargets

	// Operations posted by Conn methods, handled in inbox order with the frames.
	toConnPtr         // Frame for Delivery.conn
	opCloseAfterFlush // close Delivery.conn once its frames are written
	opUnregister      // remove Delivery.conn, then close reply
)

// Delivery is one frame for the shard to write to its connections.
type Delivery struct {
	Target Target
	Key    string       // channel name for ToChannel, connection id for ToConn
	Frame  *frame.Frame // the shard takes over one reference and releases it

	conn  *Conn
	kind  postKind
	reply chan struct{}
}

// MaxQueueBytes caps Limits.MaxBytes: queue byte counts are 32-bit.
const MaxQueueBytes = 1 << 30

// Config configures one shard. The zero value of each field is replaced by the
// default named in its comment.
type Config struct {
	// Index is the shard's number, used in logs and metrics.
	Index int
	// InboxSize is the capacity of the delivery inbox. Zero means 1024.
	InboxSize int
	// MaxBatch is the most deliveries handled before their writes are flushed.
	// Zero means 256.
	MaxBatch int
	// Limits bound each connection's outbound queue. Zero fields take the values
	// of DefaultLimits.
	Limits Limits
	// MaxSubscriptions is the most channels one connection may subscribe to.
	// Zero means 1024.
	MaxSubscriptions int
	// ShutdownGrace is how long Shutdown keeps serving requests after sending
	// close frames, waiting for connections to leave. Zero means 500ms.
	ShutdownGrace time.Duration
	// PingInterval is the period of the ping frame written to every connection.
	// Zero means no pings.
	PingInterval time.Duration
	// Logger receives the shard's structured logs. Nil means slog.Default().
	Logger *slog.Logger
	// OnChannel is called on the shard goroutine when the shard gains the first
	// subscriber of a channel (active) or loses the last one (!active). It must not
	// block; calls for one shard arrive in order.
	OnChannel func(shard int, channel string, active bool)
	// OnRemove is called on the shard goroutine after a connection left the shard,
	// for any reason. It must not block.
	OnRemove func(c *Conn)
	// IdleTimeout closes a connection whose reader has not touched it (Conn.Touch)
	// for this long, with close 1001 "ping timeout". Connections never touched
	// (no read side) are exempt. Zero means no timeout.
	IdleTimeout time.Duration
	// OnPanic is told about a panic recovered in a connection's drain goroutine
	// (a transport's Write); that connection is closed. Nil means none.
	OnPanic func(where string, v any)
}

func (cfg *Config) withDefaults() {
	if cfg.InboxSize <= 0 {
		cfg.InboxSize = 1024
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.Limits.MaxMessages <= 0 {
		cfg.Limits.MaxMessages = DefaultLimits.MaxMessages
	}
	if cfg.Limits.MaxBytes <= 0 {
		cfg.Limits.MaxBytes = DefaultLimits.MaxBytes
	}
	cfg.Limits.MaxBytes = min(cfg.Limits.MaxBytes, MaxQueueBytes)
	if cfg.Limits.WriteTimeout <= 0 {
		cfg.Limits.WriteTimeout = DefaultLimits.WriteTimeout
	}
	if cfg.MaxSubscriptions <= 0 {
		cfg.MaxSubscriptions = 1024
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
}

// Counters are the shard's cumulative counters, readable from any goroutine.
type Counters struct {
	Conns       int64 // connections registered now
	Registered  int64 // registrations since start
	Deliveries  int64 // frames handed to connections (written or queued)
	Bytes       int64 // bytes written to transports
	Forced      int64 // slow consumers evicted
	WriteErrors int64 // connections closed after a write error
	Dropped     int64 // deliveries discarded because the shard was shutting down
	Batches     int64 // delivery batches flushed
}

// counters holds the atomics behind Counters.
type counters struct {
	conns, registered, deliveries, bytes, forced, writeErrors, dropped, batches atomic.Int64
}

// Stats is a consistent snapshot taken on the shard goroutine.
type Stats struct {
	Index         int
	Conns         int
	Channels      int
	Subscriptions int
	// Messages counts the frames delivered to the shard by target: broadcasts,
	// channel publications and private messages (each counted once, however many
	// connections it reached).
	Messages [numTargets]int64
	Counters Counters
}

// slot is the shard's dense copy of what a broadcast needs from a connection:
// iterating a packed array instead of chasing a pointer to every Conn keeps a
// million-connection broadcast inside the memory bandwidth instead of waiting on a
// cache miss per connection.
type slot struct {
	t    transport.Transport
	mode uint8 // fastDirect: write through t without touching the Conn
}

// Slot modes. Only the shard changes them; fastDirect is a hint that the Conn's
// state word is zero, kept true because only the shard starts drain goroutines.
const (
	fastDirect uint8 = iota // no backlog: write through slot.t
	fastSlow                // backlog or closing: go through the Conn
	fastSkip                // closed: skip
)

func modeOf(c *Conn) uint8 {
	switch st := c.st.Load(); {
	case st == 0:
		return fastDirect
	case st&stClosed != 0:
		return fastSkip
	default:
		return fastSlow
	}
}

type channel struct {
	name string
	subs []*Conn
}

type subRef struct {
	ch  *channel
	idx int32 // position of the connection in ch.subs
}

type op uint8

const (
	opRegister op = iota
	opSubscribe
	opUnsubscribe
	opLookup
	opStats
	opChannels
)

type request struct {
	op    op
	c     *Conn
	key   string
	reply chan response
}

type response struct {
	err   error
	ok    bool
	c     *Conn
	stats Stats
	names []string
}

var replyPool = sync.Pool{New: func() any { return make(chan response, 1) }}

// Shard is one hub actor. Its Run goroutine alone owns the connection table, the
// channel subscriptions and the per-target message counts; other goroutines reach
// them only through requests carrying a reply channel, and read the counters,
// which are atomics.
type Shard struct {
	cfg Config

	ctl      chan request  // requests that need a reply
	in       chan Delivery // frames to deliver; bounded by Config.InboxSize
	quit     chan struct{} // closed by Shutdown
	done     chan struct{} // closed when Run returns
	quitOnce sync.Once     // makes Shutdown idempotent

	lostMu   sync.Mutex    // guards lostList.
	lostList []*Conn       // connections whose send side failed, to unregister
	lostWake chan struct{} // signals lostList is not empty (capacity 1)

	stats counters

	// Owned by the Run goroutine.
	conns    map[string]*Conn
	list     []*Conn
	slots    []slot // parallel to list: what a broadcast touches, densely packed
	channels map[string]*channel
	messages [numTargets]int64
	closing  bool
	batch    []Delivery
	dirty    []*Conn
	frames   []*frame.Frame
	bufs     [][]byte
	scratch  [][]byte
}

// New returns a shard; start it with go s.Run().
func New(cfg Config) *Shard {
	cfg.withDefaults()
	return &Shard{
		cfg:      cfg,
		ctl:      make(chan request),
		in:       make(chan Delivery, cfg.InboxSize),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		lostWake: make(chan struct{}, 1),
		conns:    make(map[string]*Conn),
		channels: make(map[string]*channel),
	}
}

// Index returns the shard's number.
func (s *Shard) Index() int { return s.cfg.Index }

// Done is closed when Run has returned.
func (s *Shard) Done() <-chan struct{} { return s.done }

// Counters returns the shard's counters; it does not wait for the shard goroutine.
func (s *Shard) Counters() Counters {
	return Counters{
		Conns:       s.stats.conns.Load(),
		Registered:  s.stats.registered.Load(),
		Deliveries:  s.stats.deliveries.Load(),
		Bytes:       s.stats.bytes.Load(),
		Forced:      s.stats.forced.Load(),
		WriteErrors: s.stats.writeErrors.Load(),
		Dropped:     s.stats.dropped.Load(),
		Batches:     s.stats.batches.Load(),
	}
}

// call sends a request and waits for its reply. Every request the shard takes is
// answered, also during shutdown, so the reply needs no select on done.
func (s *Shard) call(r request) response {
	r.reply = replyPool.Get().(chan response)
	select {
	case s.ctl <- r:
	case <-s.done:
		replyPool.Put(r.reply)
		return response{err: ErrShutdown}
	}
	resp := <-r.reply
	replyPool.Put(r.reply)
	return resp
}

// Register records c in the shard and returns once it is recorded: a delivery
// handed to the shard after Register returns reaches c. Call it before c is shared
// with other goroutines. After Shutdown it returns ErrShutdown and the caller still
// owns c (and must close it).
func (s *Shard) Register(c *Conn) error {
	c.shard = s
	return s.call(request{op: opRegister, c: c}).err
}

// Unregister removes c from the shard and its channels and closes its send side,
// after the frames posted to c before the call are written. It returns when done;
// it is a no-op for a connection not registered.
func (s *Shard) Unregister(c *Conn) {
	reply := make(chan struct{})
	if s.Deliver(Delivery{Target: opUnregister, conn: c, reply: reply}) {
		select {
		case <-reply:
			return
		case <-s.done:
		}
	}
	c.Abort() // the shard has stopped and closed what it held
}

// Subscribe adds c to channel's subscribers. It reports false when c was already
// subscribed. It fails with ErrTooManySubscriptions past Config.MaxSubscriptions
// and with ErrConnClosed when c is not registered.
func (s *Shard) Subscribe(c *Conn, channel string) (bool, error) {
	r := s.call(request{op: opSubscribe, c: c, key: channel})
	return r.ok, r.err
}

// Unsubscribe removes c from channel's subscribers and reports whether it was one.
func (s *Shard) Unsubscribe(c *Conn, channel string) bool {
	return s.call(request{op: opUnsubscribe, c: c, key: channel}).ok
}

// Lookup returns the registered connection with id, or nil.
func (s *Shard) Lookup(id string) *Conn {
	return s.call(request{op: opLookup, key: id}).c
}

// Stats returns a snapshot taken on the shard goroutine.
func (s *Shard) Stats() Stats {
	r := s.call(request{op: opStats})
	if r.err != nil {
		return Stats{Index: s.cfg.Index, Counters: s.Counters()}
	}
	return r.stats
}

// Channels returns the names of the channels with subscribers in this shard.
func (s *Shard) Channels() []string {
	return s.call(request{op: opChannels}).names
}

// Deliver hands d to the shard, waiting while the inbox is full. It returns false,
// after releasing the frame, when the shard has stopped.
func (s *Shard) Deliver(d Delivery) bool {
	select {
	case s.in <- d:
		return true
	default:
	}
	select {
	case s.in <- d:
		return true
	case <-s.done:
		d.Frame.Release()
		return false
	}
}

// TryDeliver hands d to the shard unless the inbox is full. The frame is not
// released when it returns false.
func (s *Shard) TryDeliver(d Delivery) bool {
	select {
	case s.in <- d:
		return true
	default:
		return false
	}
}

// Shutdown asks the shard to stop; it is idempotent and does not wait (see Done).
// The shard sends close 1001 to every connection, keeps serving requests during the
// grace window (returning early once no connection is left), then closes the send
// side of every connection still registered.
func (s *Shard) Shutdown() {
	s.quitOnce.Do(func() { close(s.quit) })
}

// lost queues c, whose send side failed or was evicted, for removal. It may be
// called from any goroutine, including the shard's own in the middle of a batch.
func (s *Shard) lost(c *Conn, err error) {
	if err == ErrQueueFull {
		s.stats.forced.Add(1)
		lim := c.limits()
		s.cfg.Logger.Warn("shard: slow consumer evicted",
			"conn", c.id, "shard", s.cfg.Index, "reason", "outbound queue full",
			"max_messages", lim.MaxMessages, "max_bytes", lim.MaxBytes)
	} else {
		s.stats.writeErrors.Add(1)
		s.cfg.Logger.Info("shard: write failed, connection closed", "conn", c.id, "shard", s.cfg.Index, "err", err)
	}
	s.lostMu.Lock()
	s.lostList = append(s.lostList, c)
	s.lostMu.Unlock()
	select {
	case s.lostWake <- struct{}{}:
	default:
	}
}

// Run is the shard's event loop. Runs in its own goroutine until Shutdown
// completes; only this goroutine touches the connection and channel tables.
func (s *Shard) Run() {
	defer close(s.done)
	var pingC, sweepC <-chan time.Time
	if s.cfg.PingInterval > 0 {
		t := time.NewTicker(s.cfg.PingInterval)
		defer t.Stop()
		pingC = t.C
	}
	if s.cfg.IdleTimeout > 0 {
		t := time.NewTicker(sweepInterval(s.cfg.IdleTimeout, s.cfg.PingInterval))
		defer t.Stop()
		sweepC = t.C
	}
	for {
		select {
		case r := <-s.ctl:
			s.handle(r)
		case d := <-s.in:
			s.deliverBatch(d)
		case <-s.lostWake:
			s.removeLost()
		case <-pingC:
			s.ping()
		case now := <-sweepC:
			s.sweep(now)
		case <-s.quit:
			s.runShutdown()
			return
		}
	}
}

func (s *Shard) handle(r request) {
	var resp response
	switch r.op {
	case opRegister:
		resp.err = s.register(r.c)
	case opSubscribe:
		resp.ok, resp.err = s.subscribe(r.c, r.key)
	case opUnsubscribe:
		resp.ok = s.unsubscribe(r.c, r.key)
	case opLookup:
		resp.c = s.conns[r.key]
	case opStats:
		resp.stats = s.snapshot()
	case opChannels:
		resp.names = make([]string, 0, len(s.channels))
		for name := range s.channels {
			resp.names = append(resp.names, name)
		}
	}
	r.reply <- resp
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

// remove drops c from every table and closes its send side. It is idempotent.
func (s *Shard) remove(c *Conn) {
	i := c.slot
	if i < 0 || int(i) >= len(s.list) || s.list[i] != c {
		return
	}
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
	if c.dirty {
		c.dirty = false // still in s.dirty; flushQueued skips a closed conn
	}
	s.stats.conns.Add(-1)
	c.Abort()
	if s.cfg.OnRemove != nil {
		s.cfg.OnRemove(c)
	}
}

func (s *Shard) removeLost() {
	s.lostMu.Lock()
	lost := s.lostList
	s.lostList = nil
	s.lostMu.Unlock()
	for _, c := range lost {
		s.remove(c)
	}
}

func (s *Shard) subscribe(c *Conn, name string) (bool, error) {
	if c.slot < 0 || s.list[c.slot] != c {
		return false, ErrConnClosed
	}
	for _, r := range c.subs {
		if r.ch.name == name {
			return false, nil
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
		Index:    s.cfg.Index,
		Conns:    len(s.list),
		Channels: len(s.channels),
		Messages: s.messages,
		Counters: s.Counters(),
	}
	for _, ch := range s.channels {
		st.Subscriptions += len(ch.subs)
	}
	return st
}

// deliverBatch handles first and whatever else is waiting in the inbox (up to
// MaxBatch) as one batch, so that all the frames a connection gets in the batch
// leave in one write.
func (s *Shard) deliverBatch(first Delivery) {
	batch := append(s.batch[:0], first)
	allToAll := first.Target == ToAll
fill:
	for len(batch) < s.cfg.MaxBatch {
		select {
		case d := <-s.in:
			batch = append(batch, d)
			allToAll = allToAll && d.Target == ToAll
		default:
			break fill
		}
	}
	if s.closing {
		s.dropBatch(batch)
	} else {
		switch {
		case allToAll:
			s.messages[ToAll] += int64(len(batch))
			s.writeAll(batch)
		case len(batch) == 1 && batch[0].Target < numTargets:
			s.messages[batch[0].Target]++
			s.writeOne(batch)
		default:
			s.writeQueued(batch)
		}
		s.stats.batches.Add(1)
	}
	for i := range batch {
		if f := batch[i].Frame; f != nil {
			f.Release()
		}
		batch[i] = Delivery{}
	}
	s.batch = batch[:0]
	s.removeLost()
}

// prepare lays the batch's frames and their bytes out for writeBatch.
func (s *Shard) prepare(batch []Delivery) (frames []*frame.Frame, bufs [][]byte, total int) {
	frames, bufs = s.frames[:0], s.bufs[:0]
	for _, d := range batch {
		frames = append(frames, d.Frame)
		b := d.Frame.Bytes()
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

// writeAll writes a batch of broadcasts to every connection: one write per
// connection carrying all the batch's frames.
func (s *Shard) writeAll(batch []Delivery) {
	frames, bufs, total := s.prepare(batch)
	s.writeEvery(frames, bufs, total)
	s.unprepare()
}

// writeEvery writes frames to every connection, walking the dense slots and
// touching a Conn only when its slot says it needs the slow path.
func (s *Shard) writeEvery(frames []*frame.Frame, bufs [][]byte, total int) {
	var delivered, written int64
	for i := range s.slots {
		sl := &s.slots[i]
		switch sl.mode {
		case fastDirect:
			n, err := sl.t.TryWrite(bufs)
			written += int64(n)
			if err == nil && n == total {
				delivered++
				continue
			}
			c := s.list[i]
			if c.afterFastWrite(frames, n, err) {
				delivered++
			}
			sl.mode = modeOf(c)
		case fastSlow:
			c := s.list[i]
			ok, n := c.writeBatch(frames, bufs, total)
			if ok {
				delivered++
			}
			written += int64(n)
			sl.mode = modeOf(c)
		}
	}
	s.stats.deliveries.Add(delivered * int64(len(frames)))
	s.stats.bytes.Add(written)
}

// syncSlot refreshes c's slot after the shard changed c's state through the Conn.
func (s *Shard) syncSlot(c *Conn) {
	if i := c.slot; i >= 0 && int(i) < len(s.slots) && s.list[i] == c {
		s.slots[i].mode = modeOf(c)
	}
}

// writeOne delivers a batch of one frame to its targets without queueing.
func (s *Shard) writeOne(batch []Delivery) {
	d := batch[0]
	frames, bufs, total := s.prepare(batch)
	switch d.Target {
	case ToAll:
		s.writeEvery(frames, bufs, total)
	case ToChannel:
		if ch := s.channels[d.Key]; ch != nil {
			s.writeTo(ch.subs, frames, bufs, total)
		}
	case ToConn:
		if c := s.conns[d.Key]; c != nil {
			one := [1]*Conn{c}
			s.writeTo(one[:], frames, bufs, total)
		}
	}
	s.unprepare()
}

func (s *Shard) writeTo(conns []*Conn, frames []*frame.Frame, bufs [][]byte, total int) {
	var delivered, written int64
	for _, c := range conns {
		ok, n := c.writeBatch(frames, bufs, total)
		if ok {
			delivered++
		}
		written += int64(n)
		if !ok || n < total {
			s.syncSlot(c)
		}
	}
	s.stats.deliveries.Add(delivered * int64(len(frames)))
	s.stats.bytes.Add(written)
}

// writeQueued handles a mixed batch: each frame is queued on each of its targets,
// then every connection that got frames writes them in one call. Operations on a
// connection (close, unregister) first flush what that connection has, so they
// apply in inbox order.
func (s *Shard) writeQueued(batch []Delivery) {
	var delivered int64
	for _, d := range batch {
		if d.Target < numTargets {
			s.messages[d.Target]++
		}
		switch d.Target {
		case ToAll:
			delivered += s.enqueueAll(s.list, d.Frame)
		case ToChannel:
			if ch := s.channels[d.Key]; ch != nil {
				delivered += s.enqueueAll(ch.subs, d.Frame)
			}
		case ToConn:
			if c := s.conns[d.Key]; c != nil {
				one := [1]*Conn{c}
				delivered += s.enqueueAll(one[:], d.Frame)
			}
		case toConnPtr:
			one := [1]*Conn{d.conn}
			if n := s.enqueueAll(one[:], d.Frame); n > 0 && d.kind == postFrame {
				delivered++
			}
		case opCloseAfterFlush:
			s.flushConn(d.conn)
			d.conn.mu.Lock()
			d.conn.closeAfterFlushLocked()
			d.conn.mu.Unlock()
			s.syncSlot(d.conn)
		case opUnregister:
			s.flushConn(d.conn)
			s.remove(d.conn)
			close(d.reply)
		}
	}
	var written int64
	for i, c := range s.dirty {
		if c.dirty {
			c.dirty = false
			written += int64(c.flushQueued(&s.scratch))
			s.syncSlot(c)
		}
		s.dirty[i] = nil
	}
	s.dirty = s.dirty[:0]
	s.stats.deliveries.Add(delivered)
	s.stats.bytes.Add(written)
}

// flushConn writes what c has queued in this batch now, ahead of an operation.
func (s *Shard) flushConn(c *Conn) {
	if c.dirty {
		c.dirty = false // its entry in s.dirty is skipped
		s.stats.bytes.Add(int64(c.flushQueued(&s.scratch)))
		s.syncSlot(c)
	}
}

// dropBatch discards a batch that arrived during shutdown; operations on
// connections are still carried out.
func (s *Shard) dropBatch(batch []Delivery) {
	for _, d := range batch {
		switch d.Target {
		case opCloseAfterFlush:
			d.conn.mu.Lock()
			d.conn.closeAfterFlushLocked()
			d.conn.mu.Unlock()
		case opUnregister:
			s.remove(d.conn)
			close(d.reply)
		default:
			s.stats.dropped.Add(1)
		}
	}
}

func (s *Shard) enqueueAll(conns []*Conn, f *frame.Frame) int64 {
	var n int64
	for _, c := range conns {
		if !c.enqueue(f) {
			continue
		}
		n++
		if !c.dirty {
			c.dirty = true
			s.dirty = append(s.dirty, c)
		}
	}
	return n
}

var pingFrame = frame.Static(frame.OpPing, nil)

// ping writes a ping frame to every connection; the engine's read deadline closes
// the connections that stop answering.
func (s *Shard) ping() {
	frames := [1]*frame.Frame{pingFrame}
	bufs := [1][]byte{pingFrame.Bytes()}
	for i, c := range s.list {
		if s.slots[i].mode != fastSkip {
			_, _ = c.writeBatch(frames[:], bufs[:], len(bufs[0]))
			s.slots[i].mode = modeOf(c)
		}
	}
}

// sweepInterval is how often the idle sweep runs: often enough that a silent
// connection is closed within a few seconds of its timeout (the gap between the
// ping interval and the timeout), at most once a second and at least once per
// timeout.
func sweepInterval(idle, ping time.Duration) time.Duration {
	d := idle
	if ping > 0 && ping < idle {
		d = idle - ping
	}
	return min(max(d, time.Second), idle)
}

var timeoutClose = frame.Static(frame.OpClose, closePayload(CloseGoingAway, "ping timeout"))

func closePayload(code uint16, reason string) []byte {
	return append([]byte{byte(code >> 8), byte(code)}, reason...)
}

// sweep closes the connections whose peers have been silent for longer than
// IdleTimeout: one atomic load per connection.
func (s *Shard) sweep(now time.Time) {
	limit := uint32(s.cfg.IdleTimeout / time.Second)
	sec := uint32(now.Unix())
	for i, c := range s.list {
		seen := c.seen.Load()
		if seen == 0 || sec-seen <= limit || s.slots[i].mode == fastSkip {
			continue
		}
		c.mu.Lock()
		c.setCauseLocked(CauseTimeout)
		_ = c.writeOneLocked(timeoutClose)
		c.closeAfterFlushLocked()
		c.mu.Unlock()
		s.slots[i].mode = modeOf(c)
	}
}

// runShutdown sends close 1001 to every connection, serves requests during the
// grace window while connections leave, then closes the send side of those left.
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
		case d := <-s.in:
			one := [1]Delivery{d}
			s.dropBatch(one[:])
			if d.Frame != nil {
				d.Frame.Release()
			}
		default:
			return
		}
	}
}

// CloseGoingAway is the close code sent to every connection at shutdown.
const CloseGoingAway = 1001

// serveDuringGrace keeps answering requests (Register is refused) until the grace
// window ends or no connection is left, instead of sleeping through it.
func (s *Shard) serveDuringGrace() {
	if len(s.list) == 0 {
		return
	}
	timer := time.NewTimer(s.cfg.ShutdownGrace)
	defer timer.Stop()
	for len(s.list) > 0 {
		select {
		case r := <-s.ctl:
			s.handle(r)
		case d := <-s.in:
			s.deliverBatch(d)
		case <-s.lostWake:
			s.removeLost()
		case <-timer.C:
			return
		}
	}
}
