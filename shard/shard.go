package shard

import (
	"log/slog"
	"sync"
	"time"

	"github.com/shardhub/shardhub/internal/ratelog"
	"github.com/shardhub/shardhub/shard/frame"
	"github.com/shardhub/shardhub/shard/transport"
)

// Defaults of Config and Limits: the one place they are defined (the engine's
// Config refers to them).
const (
	DefaultInboxSize        = 1024
	DefaultMaxBatch         = 256
	DefaultMaxMessages      = 1024
	DefaultMaxBytes         = 4 << 20
	DefaultWriteTimeout     = 10 * time.Second
	DefaultMaxSubscriptions = 1024
	DefaultShutdownGrace    = 500 * time.Millisecond
	// DefaultMaxRecoveryBuffer is the most live publications buffered for one
	// recovering subscription.
	DefaultMaxRecoveryBuffer = 4096
)

// MaxQueueBytes caps Limits.MaxBytes: queue byte counts are 32-bit.
const MaxQueueBytes = 1 << 30

// Config configures one shard. The zero value of each field is replaced by the
// default named in its comment.
type Config struct {
	// Index is the shard's number, used in logs and metrics.
	Index int
	// InboxSize is the capacity of the command inbox. Zero means
	// DefaultInboxSize.
	InboxSize int
	// MaxBatch is the most commands handled before their writes are flushed.
	// Zero means DefaultMaxBatch.
	MaxBatch int
	// Limits bound each connection's outbound queue. Zero fields take the
	// Default values.
	Limits Limits
	// MaxSubscriptions is the most channels one connection may subscribe to.
	// Zero means DefaultMaxSubscriptions.
	MaxSubscriptions int
	// MaxRecoveryBuffer is the most live publications buffered for one
	// recovering subscription; past it the connection is closed with 1013 so
	// that it recovers again. Zero means DefaultMaxRecoveryBuffer.
	MaxRecoveryBuffer int
	// ShutdownGrace is how long Shutdown keeps serving commands after sending
	// close frames, waiting for connections to leave. Zero means
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// PingInterval is the period of the ping frame written to every connection.
	// Zero means no pings.
	PingInterval time.Duration
	// IdleTimeout closes a connection whose reader has not touched it (Conn.Touch)
	// for this long, with close 1001 "ping timeout". Connections never touched
	// (no read side) are exempt. Zero means no timeout.
	IdleTimeout time.Duration
	// Logger receives the shard's structured logs, rate-limited: its lines
	// are about one connection (an eviction, a failed write), which a crowd of
	// clients could otherwise turn into a flood. Nil means slog.Default().
	Logger *slog.Logger
	// OnChannel is called on the shard goroutine when the shard gains the first
	// subscriber of a channel (active) or loses the last one (!active). It must not
	// block; calls for one shard arrive in order.
	OnChannel func(shard int, channel string, active bool)
	// OnRemove is called on the shard goroutine after a connection left the shard,
	// for any reason. It must not block.
	OnRemove func(c *Conn)
	// OnPanic is told about a panic recovered in a connection's drain goroutine
	// (a transport's Write); that connection is closed. Nil means none.
	OnPanic func(where string, v any)
}

func (cfg *Config) withDefaults() {
	if cfg.InboxSize <= 0 {
		cfg.InboxSize = DefaultInboxSize
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.MaxSubscriptions <= 0 {
		cfg.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if cfg.MaxRecoveryBuffer <= 0 {
		cfg.MaxRecoveryBuffer = DefaultMaxRecoveryBuffer
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = ratelog.Logger(cfg.Logger)
}

// Stats is a consistent snapshot taken on the shard goroutine.
type Stats struct {
	Index         int
	Conns         int
	Channels      int
	Subscriptions int
	// Broadcasts, Publications and Privates count the messages handed to the
	// shard, each once however many connections it reached.
	Broadcasts, Publications, Privates int64
	Counters                           Counters
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
// state word is zero. It stays true until the shard itself starts a drain
// goroutine (only the shard does, for a registered Conn), except that another
// goroutine may close the Conn (Abort): the fast path's write then fails and
// afterFastWrite sorts it out under the lock.
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

// Shard is one hub actor. Its Run goroutine alone owns the connection table, the
// channel subscriptions and the per-kind message counts; other goroutines reach
// them only through commands in its inbox, and read the counters, which are
// atomics.
type Shard struct {
	cfg Config

	in       chan cmd      // the one ordered command stream; bounded by Config.InboxSize
	quit     chan struct{} // closed by Shutdown
	done     chan struct{} // closed when Run returns
	quitOnce sync.Once     // makes Shutdown idempotent

	stats counters

	// Owned by the Run goroutine.
	conns    map[string]*Conn
	list     []*Conn
	slots    []slot // parallel to list: what a broadcast touches, densely packed
	channels map[string]*channel
	msgs     [3]int64 // broadcasts, publications, privates handed to the shard
	closing  bool
	batch    []cmd
	dirty    []*Conn
	lost     []*Conn // connections whose send side failed during a batch, removed after it
	frames   []*frame.Frame
	bufs     [][]byte
	scratch  [][]byte
}

// New returns a shard; start it with go s.Run().
func New(cfg Config) *Shard {
	cfg.withDefaults()
	return &Shard{
		cfg:      cfg,
		in:       make(chan cmd, cfg.InboxSize),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		conns:    make(map[string]*Conn),
		channels: make(map[string]*channel),
	}
}

// Index returns the shard's number.
func (s *Shard) Index() int { return s.cfg.Index }

// Done is closed when Run has returned.
func (s *Shard) Done() <-chan struct{} { return s.done }

// InboxLen returns the commands waiting in the inbox.
func (s *Shard) InboxLen() int { return len(s.in) }

// Shutdown asks the shard to stop; it is idempotent and does not wait (see Done).
// The shard sends close 1001 to every connection, keeps serving commands during
// the grace window (returning early once no connection is left), then closes
// the send side of every connection still registered. Commands posted after it
// stopped are disposed of by the poster: frames are dropped and counted,
// requests answered with ErrShutdown.
func (s *Shard) Shutdown() {
	s.quitOnce.Do(func() { close(s.quit) })
}

// Run is the shard's event loop. Runs in its own goroutine until Shutdown
// completes; only this goroutine touches the connection and channel tables.
func (s *Shard) Run() {
	defer func() {
		close(s.done)
		s.drainDead() // what was posted while Run was returning
	}()
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
		case c := <-s.in:
			s.handleBatch(c)
		case <-pingC:
			s.ping()
		case <-sweepC:
			s.sweep()
		case <-s.quit:
			s.runShutdown()
			return
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
