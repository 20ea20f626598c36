package shard

import (
	"sync"

	"github.com/shardhub/shardhub/shard/frame"
)

// The shard's inbox is the one typed, ordered stream of everything that
// touches its connections: frames to write, subscription changes, closes,
// registrations, recovery steps and the requests that read its tables. The
// shard handles it in order, so "a frame posted before a subscribe is not
// delivered to the new subscriber, one posted after it is" holds by
// construction, as does "an unregister is handled after the frames posted to
// the connection before it" (they get one last non-blocking write; what the
// socket does not take then is dropped and counted with the connection).

// cmdKind is what a command asks of the shard.
type cmdKind uint8

const (
	cmdBroadcast   cmdKind = iota // frame → every connection
	cmdPublish                    // frame → the subscribers of channel key; offset is its history offset, or ""
	cmdSendTo                     // frame → the connection whose id is key
	cmdWrite                      // frame → conn (a message or a protocol frame, per the frame)
	cmdClose                      // close conn once its frames are written
	cmdRegister                   // record conn; reply
	cmdUnregister                 // remove conn after one last non-blocking write of its frames; reply
	cmdSubscribe                  // subscribe conn to channel key (flag: recovering), then queue frame (if any) on it; reply
	cmdUnsubscribe                // unsubscribe conn from channel key; reply
	cmdRecoverEnd                 // end conn's recovery on key: flush buffered frames newer than offset (all when !flag)
	cmdLost                       // conn's send side failed: remove it
	cmdLookup                     // reply with the connection whose id is key
	cmdStats                      // reply with a snapshot
	cmdChannels                   // reply with the names of the channels
	cmdCount                      // reply with the number of subscribers of channel key
	cmdBarrier                    // reply once every command before it was handled
)

// hasFrame reports whether the command carries a frame for connections.
func (k cmdKind) hasFrame() bool { return k <= cmdWrite }

// cmd is one command in a shard's inbox.
type cmd struct {
	kind   cmdKind
	flag   bool         // cmdSubscribe: recovering; cmdRecoverEnd: recovered (flush only what is newer than offset)
	key    string       // channel name or connection id
	offset string       // cmdPublish: history offset; cmdRecoverEnd: the last recovered offset
	frame  *frame.Frame // frame commands: the shard takes over one reference
	conn   *Conn        // the connection concerned
	reply  chan result  // requests: answered exactly once
}

// result answers a request.
type result struct {
	err   error
	ok    bool
	conn  *Conn
	stats Stats
	names []string
	n     int
}

var replyPool = sync.Pool{New: func() any { return make(chan result, 1) }}

// post hands c to the shard, waiting while the inbox is full. It returns
// false when the shard has stopped, after disposing of c (its frame released
// and counted as dropped, its request answered with ErrShutdown).
func (s *Shard) post(c cmd) bool {
	select {
	case <-s.done:
		s.dispose(c)
		return false
	default:
	}
	select {
	case s.in <- c:
	default:
		select {
		case s.in <- c:
		case <-s.done:
			s.dispose(c)
			return false
		}
	}
	s.posted()
	return true
}

// posted finishes a successful post: if Run has returned meanwhile it may
// not have taken the command, and nobody else will, so the poster disposes of
// what is left in the inbox.
func (s *Shard) posted() {
	select {
	case <-s.done:
		s.drainDead()
	default:
	}
}

// tryPost hands c to the shard unless the inbox is full. The caller keeps
// c's frame reference when it returns false.
func (s *Shard) tryPost(c cmd) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case s.in <- c:
	default:
		return false
	}
	s.posted()
	return true
}

// call posts a request and waits for its answer; every request taken is
// answered, by Run or, once it stopped, by whoever disposes of it.
func (s *Shard) call(c cmd) result {
	c.reply = replyPool.Get().(chan result)
	s.post(c)
	r := <-c.reply // answered by Run, or by dispose after it stopped
	replyPool.Put(c.reply)
	return r
}

// drainDead disposes of whatever is in the inbox of a stopped shard.
func (s *Shard) drainDead() {
	for {
		select {
		case c := <-s.in:
			s.dispose(c)
		default:
			return
		}
	}
}

// dispose ends a command the shard will never handle: its frame is dropped
// (counted once per connection it would have reached, which after shutdown is
// none left), its request answered with ErrShutdown, its connection closed.
func (s *Shard) dispose(c cmd) {
	if c.frame != nil {
		c.frame.Release()
	}
	if c.conn != nil && (c.kind == cmdUnregister || c.kind == cmdLost || c.kind == cmdClose) {
		c.conn.Abort()
	}
	if c.reply != nil {
		c.reply <- result{err: ErrShutdown}
	}
}

// Register records c in the shard and returns once it is recorded: a frame
// handed to the shard after Register returns reaches c. Call it before c is
// shared with other goroutines. After Shutdown it returns ErrShutdown and the
// caller still owns c (and must close it).
func (s *Shard) Register(c *Conn) error {
	c.shard = s
	return s.call(cmd{kind: cmdRegister, conn: c}).err
}

// Unregister removes c from the shard and its channels and closes its send side,
// after the frames posted to c before the call had one last non-blocking write
// (what the socket does not take then is dropped and counted: the connection is
// going away). It returns when done; it is a no-op for a connection not
// registered.
func (s *Shard) Unregister(c *Conn) {
	s.call(cmd{kind: cmdUnregister, conn: c})
}

// Subscribe adds c to channel's subscribers. It reports false when c was already
// subscribed. It fails with ErrTooManySubscriptions past Config.MaxSubscriptions
// and with ErrConnClosed when c is not registered.
func (s *Shard) Subscribe(c *Conn, channel string) (bool, error) {
	return s.SubscribeAndSend(c, channel, nil)
}

// SubscribeAndSend is Subscribe that also queues reply (when not nil) on c
// in the same step, when the subscription succeeds: no publication of the
// channel can reach c before its reply. The caller keeps its reference.
func (s *Shard) SubscribeAndSend(c *Conn, channel string, reply *frame.Frame) (bool, error) {
	if reply != nil {
		reply.Retain(1)
	}
	r := s.call(cmd{kind: cmdSubscribe, conn: c, key: channel, frame: reply})
	return r.ok, r.err
}

// SubscribeRecovering subscribes c to channel in recovering mode: the live
// publications of the channel that reach c from now on are buffered (up to
// Config.MaxRecoveryBuffer) instead of written, until EndRecovery. A
// subscription c already had is replaced.
func (s *Shard) SubscribeRecovering(c *Conn, channel string) error {
	return s.call(cmd{kind: cmdSubscribe, conn: c, key: channel, flag: true}).err
}

// EndRecovery ends c's recovery on channel, after the frames posted to c
// before it (the recovered publications). With recovered set, the buffered
// publications with an offset newer than last are written, in order, and live
// publications still in flight at or below the newest offset written are
// dropped as duplicates; without it (history could not be read), every
// buffered publication is written. It does not wait.
func (s *Shard) EndRecovery(c *Conn, channel, last string, recovered bool) {
	s.post(cmd{kind: cmdRecoverEnd, conn: c, key: channel, offset: last, flag: recovered})
}

// Unsubscribe removes c from channel's subscribers and reports whether it was one.
func (s *Shard) Unsubscribe(c *Conn, channel string) bool {
	return s.call(cmd{kind: cmdUnsubscribe, conn: c, key: channel}).ok
}

// Lookup returns the registered connection with id, or nil.
func (s *Shard) Lookup(id string) *Conn {
	return s.call(cmd{kind: cmdLookup, key: id}).conn
}

// Stats returns a snapshot taken on the shard goroutine.
func (s *Shard) Stats() Stats {
	r := s.call(cmd{kind: cmdStats})
	if r.err != nil {
		return Stats{Index: s.cfg.Index, Counters: s.Counters()}
	}
	return r.stats
}

// Channels returns the names of the channels with subscribers in this shard.
func (s *Shard) Channels() []string {
	return s.call(cmd{kind: cmdChannels}).names
}

// Subscribers returns the number of connections of this shard subscribed to
// channel.
func (s *Shard) Subscribers(channel string) int {
	return s.call(cmd{kind: cmdCount, key: channel}).n
}

// Barrier returns once the shard has handled every command posted before it
// (frames written or queued on their connections). It returns ErrShutdown when
// the shard stopped first.
func (s *Shard) Barrier() error {
	return s.call(cmd{kind: cmdBarrier}).err
}

// Broadcast hands f to every connection of the shard, waiting while the inbox
// is full. The shard takes over one reference. It returns false, after
// releasing it, when the shard has stopped.
func (s *Shard) Broadcast(f *frame.Frame) bool {
	return s.post(cmd{kind: cmdBroadcast, frame: f})
}

// Publish hands f to the subscribers of channel, like Broadcast. offset is the
// publication's history offset ("" when the channel keeps none): recovering
// subscriptions use it to tell what they already have.
func (s *Shard) Publish(channel, offset string, f *frame.Frame) bool {
	return s.post(cmd{kind: cmdPublish, key: channel, offset: offset, frame: f})
}

// SendTo hands f to the connection with id, like Broadcast. Nothing is
// written when no such connection is registered.
func (s *Shard) SendTo(id string, f *frame.Frame) bool {
	return s.post(cmd{kind: cmdSendTo, key: id, frame: f})
}
